"""CheXpert exporter: synthetic cases read back the way CheXpert loaders read the dataset, and the release of
real data (a real CT, real IU radiographs and the real CR radiograph RG1_UNCR) read by a reader that makes
torchxrayvision's ``CheX_Dataset`` accesses."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom import Dataset

from labeling.rules import chexpert_row
from labeling.types import CHEXPERT_OBSERVATIONS, ProposedFinding
from releases.errors import ReleaseError
from releases.formats import chexpert
from releases.records import CaseRecord, DirSink, FormatError
from tests.releases.synth2d import META, X, Y, image_record, label

# CheXpert-v1.0's train.csv header, as the dataset ships it (and as torchxrayvision / CovidPrognosis read it)
CHEXPERT_HEADER = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def header(**values) -> dict:
    """A pydicom JSON header dict with the given keywords, as the platform stores the de-identified one."""
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds.to_json_dict()


def read_rows(root: Path, name: str) -> list[dict[str, str]]:
    with open(root / "chexpert" / name, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        assert head == CHEXPERT_HEADER or name == "cases.csv"
        return [dict(zip(head, row, strict=True)) for row in reader]


def test_columns_are_chexperts_and_the_labeler_order_differs():
    assert list(chexpert.COLUMNS) == CHEXPERT_HEADER
    assert sorted(chexpert.OBSERVATIONS) == sorted(CHEXPERT_OBSERVATIONS)
    # the platform labeler lists Lung Lesion before Lung Opacity; CheXpert the other way round
    assert chexpert.OBSERVATIONS.index("Lung Opacity") < chexpert.OBSERVATIONS.index("Lung Lesion")
    assert CHEXPERT_OBSERVATIONS.index("Lung Opacity") > CHEXPERT_OBSERVATIONS.index("Lung Lesion")


def test_rows_labels_views_and_paths(tmp_path, sink):
    image = image_record(tmp_path, "img")
    labels_a = [
        label("p1", code="Cardiomegaly", source="weak"),
        label("p2", code="Cardiomegaly", source="weak", assertion="absent"),
        label("p3", code="Edema", source="weak", assertion="uncertain"),
        label("p4", code="Edema", source="model", assertion="absent"),
        label("p5", code="Pneumothorax", source="weak", assertion="absent"),
        label("p6", code="Pleural Effusion", source="weak"),  # overridden by the human label below
        label("f7", code="Pleural Effusion", source="human", assertion="absent", kind="mask"),
        label("f8", code="2b", kind="box", box=[0, 0, 4, 4]),  # not a CheXpert observation
        label("f9", code="Edema", kind="polygon"),
        label("f10", code="Lung Opacity", source="human"),
    ]
    pa = header(PatientSex="M", PatientAge="045Y", ViewPosition="PA")
    lateral = header(PatientSex="F", PatientAge="018M", ViewPosition="LL")
    oriented = header(PatientSex="O", PatientOrientation=["A", "F"])  # no ViewPosition: orientation says it
    ap = header(PatientAge="080Y", ViewPosition="AP")

    def case(cid, patient, study, split, hdr, numbering, labels=()):
        img = image_record(tmp_path, cid)
        img.dicom_header = hdr
        return CaseRecord(cid, patient, study, split, img, labels=list(labels), numbering=numbering)

    cases = [
        case("a", "PA", "SA", "train", pa, {"patient": 7, "study": 1, "scan": 1}, labels_a),
        case("b", "PA", "SA", "train", lateral, {"patient": 7, "study": 1, "scan": 2},
             [label("p1", code="Pneumothorax", assertion="absent")]),
        case("c", "PC", "SC", "val", oriented, {"patient": 123456, "study": 2, "scan": 1}),
        case("d", "PD", "SD", "test", ap, {"patient": 9, "study": 1, "scan": 1},
             [label("p1", code="Support Devices")]),
        case("e", "PE", "SE", "test", None, {"patient": 10, "study": 3, "scan": 4}),
    ]  # fmt: skip
    done = []
    summary = chexpert.export(iter(cases), sink, META, progress=done.append)
    assert done == [1, 2, 3, 4, 5]
    assert (summary.cases, summary.files, summary.labels) == (5, 5 + 4, 7 + 1 + 0 + 1 + 0)
    assert summary.skipped == [
        "a/f8: code '2b' is not a CheXpert observation",
        "a/f9: kind 'polygon' is not supported",
        "a/p6: weak label overridden by a human label of 'Pleural Effusion'",
    ]

    train, valid, test = (read_rows(sink.root, f"{n}.csv") for n in ("train", "valid", "test"))
    assert [r["Path"] for r in train] == [
        "chexpert/train/patient00007/study1/view1_frontal.png",
        "chexpert/train/patient00007/study1/view2_lateral.png",
    ]
    assert [r["Path"] for r in valid] == ["chexpert/valid/patient123456/study2/view1_lateral.png"]
    assert [r["Path"] for r in test] == [
        "chexpert/test/patient00009/study1/view1_frontal.png",
        "chexpert/test/patient00010/study3/view4_unknown.png",
    ]
    a, b = train
    assert (a["Sex"], a["Age"], a["Frontal/Lateral"], a["AP/PA"]) == ("Male", "45", "Frontal", "PA")
    assert (b["Sex"], b["Age"], b["Frontal/Lateral"], b["AP/PA"]) == ("Female", "1", "Lateral", "")
    c = valid[0]
    assert (c["Sex"], c["Age"], c["Frontal/Lateral"], c["AP/PA"]) == ("", "", "Lateral", "")
    d, e = test
    assert (d["Sex"], d["Age"], d["Frontal/Lateral"], d["AP/PA"]) == ("", "80", "Frontal", "AP")
    assert (e["Sex"], e["Age"], e["Frontal/Lateral"], e["AP/PA"]) == ("", "", "", "")

    assert a["Cardiomegaly"] == "1.0"  # present beats absent
    assert a["Edema"] == "-1.0"  # uncertain beats absent
    assert a["Pneumothorax"] == "0.0"
    assert a["Pleural Effusion"] == "0.0"  # the human label wins over the weak positive
    assert a["Lung Opacity"] == "1.0" and a["Lung Lesion"] == ""  # by name, whatever the labeler's order
    assert a["No Finding"] == "" and a["Fracture"] == ""
    assert b["No Finding"] == "1.0" and b["Pneumothorax"] == "0.0"
    assert all(c[obs] == "" for obs in CHEXPERT_OBSERVATIONS)  # nothing known
    assert d["No Finding"] == "1.0" and d["Support Devices"] == "1.0"

    # same values as the platform labeler's own row folding on the same mentions
    kept = [lab for lab in labels_a if lab.label_id in {"p1", "p2", "p3", "p4", "p5", "f7", "f10"}]
    expected = chexpert_row([ProposedFinding("x", "findings", 0, 1, lab.assertion, lab.code) for lab in kept])
    assert [a[o] for o in chexpert.OBSERVATIONS] == [
        "" if expected[o] is None else str(expected[o]) for o in chexpert.OBSERVATIONS
    ]

    # the images lie where Path says, relative to the export's root (CheXpert-v1.0-small's parent)
    for row in train + valid + test:
        with Image.open(sink.root / row["Path"]) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (X, Y)
    # the sidecar ties each Path to the release's case
    sidecar = read_rows(sink.root, "cases.csv")
    assert [(r["Path"], r["case_id"], r["split"], r["patient_id"]) for r in sidecar][:2] == [
        (train[0]["Path"], "a", "train", "PA"),
        (train[1]["Path"], "b", "train", "PA"),
    ]
    assert image.path.exists()


def test_images_are_8bit_windowed(tmp_path, sink):
    # a 16-bit-like source without a header: the 0.5-99.5 percentile window; its brightest corner is white
    plain = CaseRecord("plain", "P1", "S1", "train", image_record(tmp_path, "plain"))
    # the same pixels with a header window 2000 +- 1000 (linear): values map by the DICOM formula
    windowed_img = image_record(tmp_path, "win")
    windowed_img.dicom_header = header(WindowCenter=2000, WindowWidth=2000, ViewPosition="PA")
    windowed = CaseRecord("win", "P2", "S2", "train", windowed_img)
    # MONOCHROME1, 12 bits stored: the ingest stored 4095 - v, so the centre 1000 becomes 3095
    mono1_img = image_record(tmp_path, "mono1")
    mono1_img.dicom_header = header(
        WindowCenter=1000, WindowWidth=500, PhotometricInterpretation="MONOCHROME1", BitsStored=12,
        BitsAllocated=16, PixelRepresentation=0,
    )  # fmt: skip
    mono1 = CaseRecord("mono1", "P3", "S3", "train", mono1_img)
    # an 8-bit source is written as it is
    eight = image_record(tmp_path, "eight")
    import nibabel as nib

    raw = (np.arange(X * Y).reshape(X, Y) % 256).astype(np.uint8)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(eight.path))
    eight_case = CaseRecord("eight", "P4", "S4", "train", eight)
    chexpert.export([plain, windowed, mono1, eight_case], sink, META)

    rows = {r["case_id"]: r["Path"] for r in read_rows(sink.root, "cases.csv")}

    def png(cid):
        with Image.open(sink.root / rows[cid]) as im:
            assert im.mode == "L"
            return np.asarray(im)

    values = (np.arange(X)[None, :] + 100 * np.arange(Y)[:, None]).astype(float)  # (rows, columns)
    got = png("plain")
    lo, hi = np.percentile(values, [0.5, 99.5])
    assert np.array_equal(got, np.round(np.clip((values - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
    assert got[0, 0] == 0 and got[-1, -1] == 255
    got = png("win")
    expect = np.round(np.clip((values - 1999.5) / 1999 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(got, expect) and got[0, 0] == 0 and got[Y - 1, X - 1] == 255
    got = png("mono1")
    expect = np.round(np.clip((values - 3094.5) / 499 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(got, expect)
    assert np.array_equal(png("eight"), raw.T)


def test_window_functions():
    x = np.array([[0.0, 50.0, 100.0]])
    assert chexpert.apply_window(x, 50, 100, "LINEAR_EXACT").tolist() == [[0, 128, 255]]
    sig = chexpert.apply_window(x, 50, 100, "SIGMOID")
    assert sig[0, 1] == 128 and 0 < sig[0, 0] < 128 < sig[0, 2] < 255
    two = chexpert.parse_header(header(WindowCenter=[40, -600], WindowWidth=[400, 1500]))
    assert chexpert.header_window(two) == (40.0, 400.0, "LINEAR")  # the first of several
    assert chexpert.header_window(chexpert.parse_header(header(WindowCenter=40))) is None
    assert chexpert.header_window(chexpert.parse_header(header(WindowCenter=40, WindowWidth=0))) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"ViewPosition": "PA"}, ("Frontal", "PA")),
        ({"ViewPosition": "AP"}, ("Frontal", "AP")),
        ({"ViewPosition": "AP AXIAL"}, ("Frontal", "AP")),
        ({"ViewPosition": "LL"}, ("Lateral", "")),
        ({"ViewPosition": "RL"}, ("Lateral", "")),
        ({"ViewPosition": "LATERAL"}, ("Lateral", "")),
        ({"ViewPosition": "LLD"}, ("Frontal", "")),
        ({"ViewPosition": "RLO"}, ("", "")),  # oblique: neither
        ({"ViewPosition": "", "PatientOrientation": ["L", "F"]}, ("Frontal", "")),
        ({"PatientOrientation": ["P", "F"]}, ("Lateral", "")),
        ({"PatientOrientation": ["LP", "F"]}, ("", "")),  # oblique rows: not certain
        ({}, ("", "")),
    ],
)
def test_view_from_the_header(values, expected):
    assert chexpert.view_of(chexpert.parse_header(header(**values) if values else None)) == expected


def test_numbering_fallback_collisions_repeats_and_3d(tmp_path, sink):
    image = image_record(tmp_path, "img")
    cases = [  # a release frozen before numbering was recorded: numbers in the order met
        CaseRecord("x1", "PX", "S1", "train", image),
        CaseRecord("y1", "PY", "S9", "train", image),
        CaseRecord("x2", "PX", "S2", "train", image),
        CaseRecord("x3", "PX", "S2", "train", image),
        CaseRecord("x1", "PX", "S1", "train", image),  # the same case again: written once
    ]
    summary = chexpert.export(cases, sink, META)
    assert [r["Path"] for r in read_rows(sink.root, "train.csv")] == [
        "chexpert/train/patient00001/study1/view1_unknown.png",
        "chexpert/train/patient00002/study1/view1_unknown.png",
        "chexpert/train/patient00001/study2/view1_unknown.png",
        "chexpert/train/patient00001/study2/view2_unknown.png",
    ]
    assert summary.skipped == ["x1: the case appears twice in the release; written once"]

    two = [
        CaseRecord("m", "P", "S", "train", image, numbering={"patient": 1, "study": 1, "scan": 1}),
        CaseRecord("n", "Q", "T", "train", image, numbering={"patient": 1, "study": 1, "scan": 1}),
    ]
    with pytest.raises(FormatError) as err:
        chexpert.export(two, DirSink(tmp_path / "two"), META)
    assert err.value.field == "n.numbering" and "case m" in err.value.reason

    ct = CaseRecord("ct-1", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)))
    ct.image.modality = "CT"
    with pytest.raises(FormatError) as err:
        chexpert.export([ct], DirSink(tmp_path / "ct"), META)
    assert err.value.field == "ct-1.image" and "CT" in err.value.reason and "--modality" in err.value.reason


# -- the release of real data, read as torchxrayvision reads CheXpert ------------------------------------


def chex_dataset(imgpath: Path, csvpath: Path, views=("*",), unique_patients=False) -> dict:
    """The accesses of torchxrayvision's ``CheX_Dataset`` (mlmed/torchxrayvision, torchxrayvision/datasets.py,
    ``__init__`` and ``__getitem__``), written here: the CSV read with pandas, columns by name, the view
    from ``Frontal/Lateral`` and ``AP/PA``, the patient from ``Path`` (``patient\\d+``, and the text between
    ``train/`` or ``valid/`` and ``/study``), labels of the sorted 13 pathologies with ``No Finding`` zeroing
    them (not Support Devices) and -1 -> NaN, the image at ``imgpath`` joined with ``Path`` less a
    ``CheXpert-v1.0-small/`` prefix, opened as an array that must be 2D with values <= 255 (its
    ``normalize(img, maxval=255)``)."""
    pathologies = sorted(
        ["Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
         "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
         "Fracture", "Support Devices"]
    )  # fmt: skip
    df = pd.read_csv(csvpath)
    df["view"] = df["Frontal/Lateral"]
    df.loc[df["view"] == "Frontal", "view"] = df["AP/PA"]
    df["view"] = df["view"].replace({"Lateral": "L"}).astype(object).fillna("UNKNOWN")
    if "*" not in views:
        df = df[df["view"].isin(views)]
    if unique_patients:
        df["PatientID"] = df["Path"].str.extract(pat=r"(patient\d+)")
        df = df.groupby("PatientID").first().reset_index()
    healthy = df["No Finding"] == 1
    columns = []
    for pathology in pathologies:
        if pathology != "Support Devices":
            df.loc[healthy, pathology] = 0
        columns.append(df[pathology].values)
    labels = np.asarray(columns).T.astype(np.float32)
    labels[labels == -1] = np.nan
    csvpath = str(csvpath)
    split = "train/" if "train" in csvpath else "valid/" if "valid" in csvpath else None
    if split is None:
        raise NotImplementedError(csvpath)  # as CheX_Dataset does for a CSV named neither
    patientid = df.Path.str.split(split, expand=True)[1].str.split("/study", expand=True)[0]
    samples = []
    for i in range(len(df)):
        imgid = df["Path"].iloc[i].replace("CheXpert-v1.0-small/", "").replace("CheXpert-v1.0/", "")
        with Image.open(os.path.join(imgpath, imgid)) as im:
            img = np.asarray(im)
        assert img.max() <= 255 and img.ndim == 2
        samples.append(
            {
                "lab": dict(zip(pathologies, labels[i], strict=True)),
                "img": img,
                "patientid": patientid.iloc[i].replace("patient", ""),
                "view": df["view"].iloc[i],
                "age_years": df["Age"].iloc[i] * 1.0,
                "sex_male": df["Sex"].iloc[i] == "Male",
                "sex_female": df["Sex"].iloc[i] == "Female",
                "path": df["Path"].iloc[i],
            }
        )
    return {"samples": samples, "pathologies": pathologies}


def add_real_cr(real, tmp_path: Path):
    """The real CR radiograph RG1_UNCR (pydicom-data: MONOCHROME1, ViewPosition PA, PatientSex F) in the
    radiograph project, with a report labelled by the rules labeler and an accepted box finding."""
    from django.contrib.auth import get_user_model
    from pydicom.data import get_testdata_file

    from annotation.models import Stage
    from annotation.services import annotation_save, finding_create, task_approve, task_next, task_submit
    from labeling.services import label_run_execute, label_run_get_or_create
    from studies.models import Report, Scan
    from studies.services.scans import scans_ingest

    project = real.radiographs[0].project
    folder = tmp_path / "rg1"
    folder.mkdir()
    shutil.copyfile(get_testdata_file("RG1_UNCR.dcm"), folder / "RG1_UNCR.dcm")
    assert not scans_ingest(project=project, paths=[folder], workers=1).errors
    scan = Scan.objects.get(project=project, name="RG1_UNCR")
    findings = "PA view of the chest. The heart is enlarged. No pneumothorax."
    Report.objects.create(
        project=project, study=scan.study, external_id="rg1", source="text", raw_text=findings,
        checksum="rg1", findings=findings,
    )  # fmt: skip
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    ann, rad = (get_user_model().objects.get(username=name) for name in ("real-ann", "real-rad"))
    sentence = "The heart is enlarged."
    start = findings.index(sentence)
    task = finding_create(
        project=project, user=ann, study=scan.study, scan=scan, text=sentence, code="Cardiomegaly",
        section="findings", start=start, end=start + len(sentence),
    )  # fmt: skip
    annotation_save(
        task_id=task.pk,
        user=ann,
        base_version=task.finding.current_version,
        kind="box",
        box=[500, 600, 1400, 1500],
    )
    task_submit(task_id=task.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=(Stage.REVIEW, Stage.QA)).pk, user=rad)
    return scan


@pytest.mark.django_db
def test_real_release_reads_like_chex_dataset(tmp_path, shared_data, make_user):
    from releases.exporting import release_export_to
    from releases.models import ReleaseCase
    from releases.services import release_create
    from tests.releases.real import CXR_IMAGES, real_release

    real = real_release(shared_data, tmp_path, make_user)
    # the release holds the CT: a clear error naming the case and the way out
    ct_case = ReleaseCase.objects.get(release=real.release, scan_id=real.ct.pk).case_id
    with pytest.raises(ReleaseError) as err:
        release_export_to(real.release, "chexpert", DirSink(tmp_path / "mixed"))
    assert err.value.field == f"{ct_case}.image" and "--modality CR" in err.value.reason

    # the radiographs alone (the real CR radiograph added, its new patient placed in val)
    rg1 = add_real_cr(real, tmp_path)
    release = release_create(
        dataset=real.dataset,
        selection={
            "sources": "both",
            "modalities": ["CR", "DX"],
            "ratios": {"train": 0.0, "val": 1.0, "test": 0.0},
        },
    )
    cases = {c.scan_id: c for c in ReleaseCase.objects.filter(release=release)}
    assert real.ct.pk not in cases and rg1.pk in cases
    out = DirSink(tmp_path / "export")
    summary = release_export_to(release, "chexpert", out)
    out.close()
    root = out.root
    assert summary.cases == len(cases) == 3
    for name in ("train.csv", "valid.csv", "test.csv"):
        assert list(pd.read_csv(root / "chexpert" / name).columns) == CHEXPERT_HEADER
    assert len(pd.read_csv(root / "chexpert" / "test.csv")) == 0

    train = chex_dataset(root, root / "chexpert" / "train.csv", unique_patients=True)
    valid = chex_dataset(root, root / "chexpert" / "valid.csv")
    frontal = real.radiographs[0]  # report 1900's frontal image, the box and the mask findings
    iu = {s["path"]: s for s in train["samples"]}
    numbering = {scan_id: c.entry["numbering"] for scan_id, c in cases.items()}
    by_scan = {
        scan_id: f"chexpert/train/patient{n['patient']:05d}/study{n['study']}/view{n['scan']}_unknown.png"
        for scan_id, n in numbering.items()
        if scan_id != rg1.pk
    }
    assert sorted(iu) == sorted(by_scan.values())
    s1900 = iu[by_scan[frontal.pk]]
    nan = {k for k, v in s1900["lab"].items() if np.isnan(v)}
    assert {k: v for k, v in s1900["lab"].items() if k not in nan} == {
        "Support Devices": 1.0, "Lung Lesion": 1.0, "Cardiomegaly": 0.0, "Lung Opacity": 0.0,
        "Pleural Effusion": 0.0, "Pneumothorax": 0.0,
    }  # fmt: skip
    assert s1900["patientid"] == f"{numbering[frontal.pk]['patient']:05d}"
    assert s1900["view"] == "UNKNOWN" and np.isnan(s1900["age_years"]) and not s1900["sex_male"]
    # PNG radiographs carry no header: the 8-bit pixels are the source file's, unchanged
    with Image.open(shared_data / "cxr/iu" / CXR_IMAGES["1900"][0]) as im:
        assert np.array_equal(s1900["img"], np.asarray(im.convert("L")))
    other = next(s for p, s in iu.items() if p != by_scan[frontal.pk])  # report 3: no finding
    assert other["lab"]["Support Devices"] != other["lab"]["Support Devices"]  # NaN: not zeroed
    assert all(v == 0.0 for k, v in other["lab"].items() if k != "Support Devices")

    (cr,) = valid["samples"]
    n = numbering[rg1.pk]
    assert (
        cr["path"]
        == f"chexpert/valid/patient{n['patient']:05d}/study{n['study']}/view{n['scan']}_frontal.png"
    )
    assert cr["view"] == "PA" and cr["sex_female"] and np.isnan(cr["age_years"])
    assert cr["lab"]["Cardiomegaly"] == 1.0 and cr["lab"]["Pneumothorax"] == 0.0
    assert [
        s["path"] for s in chex_dataset(root, root / "chexpert" / "valid.csv", views=["PA"])["samples"]
    ] == [cr["path"]]
    # windowed by the header's window, as the ingest recorded it for the inverted (MONOCHROME1) pixels
    (voi, *_) = rg1.meta["window"]
    stored = np.asarray(release_case_image(cases[rg1.pk]), dtype=float).T
    expect = np.round(np.clip((stored - (voi["center"] - 0.5)) / (voi["width"] - 1) + 0.5, 0, 1) * 255)
    assert cr["img"].shape == (rg1.shape[1], rg1.shape[0]) and np.array_equal(
        cr["img"], expect.astype(np.uint8)
    )
    assert 20 < cr["img"].mean() < 235  # a visible radiograph, not a black or white page

    sidecar = {r["case_id"]: r for r in read_rows(root, "cases.csv")}
    assert {r["Path"] for r in sidecar.values()} == set(iu) | {cr["path"]}
    assert sidecar[cases[rg1.pk].case_id]["split"] == "val"


def release_case_image(case) -> np.ndarray:
    """The stored image of a release case (X, Y), read from storage."""
    import nibabel as nib
    from django.core.files.storage import default_storage

    from core.storage import storage_local_copy

    assert default_storage.exists(case.entry["image_key"])
    with storage_local_copy(case.entry["image_key"]) as path:
        return np.asarray(nib.load(str(path)).dataobj)

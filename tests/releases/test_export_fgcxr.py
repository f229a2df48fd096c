"""FG-CXR exporter on synthetic cases (and every radiograph format's lazy pass), read back the way the
FG-CXR authors' code reads its dataset: a reader written here (``fgcxr_prepare``, ``fgcxr_load``) that makes
the accesses of ``UARK-AICV/FG-CXR`` 174bf13 ``fgcxr/prepare.py`` (``build_manifest``) and ``fgcxr/data.py``
(``load_manifest``, ``select_studies``, ``HeatmapDataset``, ``ReportDataset``), restated, not copied."""

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from releases.formats import chexpert, fgcxr, radfact
from releases.records import CaseRecord, DirSink, FormatError, GazeAnatomyRecord
from tests.releases.synth2d import META, X, Y, heatmap, image_record, label, mask_png, read_png, rect

REGIONS = ("heart", "left", "upper left", "lower left", "right", "upper right", "lower right")  # constants.py
SIZE = 224  # HeatmapDataset's image_size

# -- the authors' accesses, restated ------------------------------------------------------------------


def fgcxr_prepare(root: Path) -> list[dict]:
    """``build_manifest`` without a REFLACX id map: ``full.json`` as ``{study_id: annotation}``; the image
    ``images/<annotation["dicom_id"]>.jpg`` must exist; ``dict(zip(type, sentence, strict=True))`` indexed
    by each of the seven regions, its sentence ``.strip()``-ed; the heatmap
    ``heatmaps/<study_id>_<region with "_" for " ">.png`` must exist (``heatmaps_reflacx/`` is the fallback,
    unused here); the mask path ``masks/<study_id>_mask.png`` is listed, not checked. Its fixed
    2,074/295/582 split is not restated: the export's manifest carries the release's splits."""
    annotations = json.loads((root / "full.json").read_text())
    studies = []
    for study_id, annotation in annotations.items():
        dicom_id = annotation["dicom_id"]
        image = root / "images" / f"{dicom_id}.jpg"
        assert image.is_file(), image
        by_region = dict(zip(annotation["type"], annotation["sentence"], strict=True))
        regions = []
        for region in REGIONS:
            heatmap_path = root / "heatmaps" / f"{study_id}_{region.replace(' ', '_')}.png"
            assert heatmap_path.is_file(), heatmap_path
            regions.append(
                {
                    "name": region,
                    "sentence": by_region[region].strip(),
                    "heatmap": str(heatmap_path.relative_to(root)),
                }
            )
        studies.append(
            {
                "study_id": study_id,
                "dicom_id": dicom_id,
                "image": str(image.relative_to(root)),
                "anatomy_mask": f"masks/{study_id}_mask.png",
                "regions": regions,
            }
        )
    return studies


def resize_crop(image: Image.Image, size: int, resample) -> np.ndarray:
    """``data.py`` ``_resize_tensor``: torchvision ``resize(image, size)`` (the shorter side to ``size``, the
    longer ``int(size * long / short)``; PIL images are resized by PIL), ``center_crop`` to ``size`` x
    ``size`` (offsets ``int(round((n - size) / 2))``), ``to_tensor`` (8-bit values / 255), channels last."""
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    image = image.resize(new, resample)
    top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.float32) / 255.0


def fgcxr_load(root: Path, split: str) -> list[dict]:
    """``load_manifest`` / ``select_studies`` / ``HeatmapDataset.__getitem__`` / ``ReportDataset``: the
    manifest's ``data_root`` (here: the export folder, where a user unpacks it), its ``regions`` equal to
    the seven (``assert_region_order``), the studies of ``split``; per study the image opened and converted
    to RGB, resized bicubic; each region's heatmap (``region["heatmap"]``) converted to L, resized bilinear;
    the target mask ``heatmap > unique(heatmap)[len(unique) // 5]`` (``_heatmap_mask``); the report
    generator's targets ``[region["sentence"] for region in study["regions"]]`` and its heatmaps divided by
    their maxima (at least 1e-6)."""
    manifest = json.loads((root / "manifest.json").read_text())
    assert tuple(manifest["regions"]) == REGIONS
    for study in manifest["studies"]:
        if "split" not in study and "clean_split" in study:
            study["split"] = study["clean_split"]
    out = []
    for study in [s for s in manifest["studies"] if s["split"] == split]:
        image = resize_crop(Image.open(root / study["image"]).convert("RGB"), SIZE, Image.BICUBIC)
        heatmaps = np.stack(
            [
                resize_crop(Image.open(root / region["heatmap"]).convert("L"), SIZE, Image.BILINEAR)
                for region in study["regions"]
            ]
        )
        masks = []
        for heat in heatmaps:
            unique = np.unique(heat)
            masks.append(heat > unique[max(0, len(unique) // 5)])
        maxima = np.maximum(heatmaps.reshape(len(heatmaps), -1).max(1), 1e-6)
        out.append(
            {
                "study_id": study["study_id"],
                "image": image,
                "heatmaps": heatmaps,
                "masks": np.stack(masks),
                "report_heatmaps": heatmaps / maxima[:, None, None],
                "reports": [region["sentence"] for region in study["regions"]],
            }
        )
    return out


# -- synthetic seven-region records ----------------------------------------------------------------------

RIGHT = rect(6, 40, 4, 28)  # the patient's right lung: on the image's left
LEFT = rect(6, 42, 36, 60)
HEART = rect(26, 44, 22, 42)
REGION_MASKS = {
    "heart": HEART,
    "left": LEFT,
    "upper left": LEFT & rect(0, 24, 0, X),
    "lower left": LEFT & rect(24, Y, 0, X),
    "right": RIGHT,
    "upper right": RIGHT & rect(0, 23, 0, X),
    "lower right": RIGHT & rect(23, Y, 0, X),
}
CENTRES = {
    "heart": (34, 32),
    "left": (24, 48),
    "upper left": (14, 48),
    "lower left": (34, 48),
    "right": (22, 16),
    "upper right": (12, 16),
    "lower right": (32, 16),
}
PROVENANCE = {"gaze_run": 7, "params": {"preset": "fgcxr", "regions": "fgcxr", "lead_s": 5.0}, "record": 1}


def record(region, reader, recording, heat, mask, caption, provenance=PROVENANCE):
    return GazeAnatomyRecord(
        anatomy=region,
        caption=caption,
        sentences=[caption] if caption else [],
        dwell_s=1.5,
        fixations=7,
        time_to_first_s=0.25,
        dwell_share=0.1,
        reader=reader,
        recording_id=recording,
        load_heatmap=lambda: heat,
        load_mask=lambda: mask,
        load_focus=lambda: heat > np.quantile(heat, 0.8),
        provenance={**provenance, "record": f"{recording}/{region}"},
    )


def seven(reader, recording, scale=1.0, captions=None, masks=REGION_MASKS, silent=()):
    """Records of the seven regions in another order than FG-CXR's; regions in ``silent`` have no gaze."""
    captions = captions or {}
    out = []
    for region in reversed(REGIONS):
        cy, cx = CENTRES[region]
        heat = np.zeros((Y, X), np.float32) if region in silent else heatmap(cy, cx, scale)
        out.append(record(region, reader, recording, heat, masks.get(region), captions.get(region, "")))
    return out


CAPTIONS = {
    "heart": "Heart size is normal.",
    "left": "Left lung is clear.",
    "lower left": "  There is a small effusion at the left base.  ",
    "right": "Right lung is clear.",
}


@pytest.fixture
def gaze_case(tmp_path):
    finding_mask = rect(10, 14, 8, 12) | rect(30, 33, 50, 60)
    case = CaseRecord(
        case_id="cxr-1",
        patient_id="P1",
        study_id="S1",
        split="train",
        image=image_record(tmp_path, "cxr-1"),
        report={"findings": "Lungs clear. Heart normal."},
        report_id="R1",
        gaze=[*seven("r1", "P102R1", 3.0, CAPTIONS, silent=("upper right",)), *seven("r2", "P102R2", 0.5)],
        labels=[
            label("finding-1", "nodule", kind="mask", mask_path=mask_png(tmp_path, "f1", finding_mask)),
            label("finding-2", "opacity", kind="box", box=[8, 4, 24, 20]),
            label("proposal-3", "cardiomegaly", kind="none", source="weak", code="Cardiomegaly"),
        ],
    )
    return case, finding_mask


def test_fgcxr_loads_as_the_authors_code_reads_it(tmp_path, sink, gaze_case):
    case, finding_mask = gaze_case
    # the same reading again in another case (the id repeats: its key gets "-2"), in the test split
    again = CaseRecord(
        "cxr-3", "P3", "S3", "test", image_record(tmp_path, "cxr-3"), gaze=seven("r1", "P102R1", 2.0)
    )
    # one recording labelled with the anatomy region set, one of a radiograph without gaze
    anatomy_only = CaseRecord(
        "cxr-4",
        "P4",
        "S4",
        "val",
        image_record(tmp_path, "cxr-4"),
        gaze=[
            record(name, "r3", "P102R9", heatmap(20, 20, 1.0), None, "") for name in ("heart", "left_lung")
        ],
    )
    no_gaze = CaseRecord("cxr-2", "P2", "S2", "test", image_record(tmp_path, "cxr-2"))
    done = []
    summary = fgcxr.export(iter([case, no_gaze, again, anatomy_only]), sink, META, progress=done.append)

    assert done == [1, 2, 3, 4]
    assert summary.format == "fgcxr" and summary.cases == 2 and summary.labels == 3
    assert summary.skipped[0] == "cxr-2: no gaze recording"
    assert summary.skipped[1].startswith(
        "cxr-4/P102R9: lacks the FG-CXR regions left, upper left, lower left, right, upper right, "
        "lower right (its records: heart, left_lung); label it with the gaze preset fgcxr"
    )
    assert "preset fgcxr" in summary.skipped[1] and len(summary.skipped) == 2
    root = sink.root / "fgcxr"
    on_disk = {p.relative_to(sink.root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {rel for rel, _, _ in sink.files} and summary.files == len(sink.files)

    # fgcxr/prepare.py's checks and what its manifest would hold
    prepared = fgcxr_prepare(root)
    assert [s["study_id"] for s in prepared] == ["P102R1", "P102R2", "P102R1-2"]
    assert [s["dicom_id"] for s in prepared] == ["cxr-1", "cxr-1", "cxr-3"]
    full = json.loads((root / "full.json").read_text())
    assert all(a["type"] == list(REGIONS) for a in full.values())
    assert full["P102R1"]["sentence"] == [
        "Heart size is normal.",
        "Left lung is clear.",
        "",
        "  There is a small effusion at the left base.  ",
        "Right lung is clear.",
        "",
        "",
    ]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["data_root"] == "data/fg_cxr" and manifest["version"] == 1
    assert manifest["split_counts"] == {"train": 2, "test": 1}
    assert [{k: v for k, v in s.items() if k != "split"} for s in manifest["studies"]] == prepared
    assert [s["split"] for s in manifest["studies"]] == ["train", "train", "test"]

    # fgcxr/data.py: the training split's two studies of cxr-1
    first, second = fgcxr_load(root, "train")
    assert second["study_id"] == "P102R2"
    assert first["study_id"] == "P102R1" and first["image"].shape == (SIZE, SIZE, 3)
    assert first["heatmaps"].shape == first["masks"].shape == (7, SIZE, SIZE)
    assert first["reports"][3] == "There is a small effusion at the left base."
    assert first["reports"][0] == "Heart size is normal." and first["reports"][2] == ""
    # the silent region: an all-zero map, no target pixel, and the report maps stay finite
    silent = REGIONS.index("upper right")
    assert not first["heatmaps"][silent].any() and not first["masks"][silent].any()
    assert np.isfinite(first["report_heatmaps"]).all()
    for index, region in enumerate(REGIONS):
        if region != "upper right":
            # each map peaks where its region's gaze was: the mask holds the loader's resized peak
            heat = first["heatmaps"][index]
            assert heat.max() > 0.9 and first["masks"][index][np.unravel_index(heat.argmax(), heat.shape)]
    assert np.allclose(first["report_heatmaps"].max(axis=(1, 2))[[0, 1, 6]], 1.0)
    [third] = fgcxr_load(root, "test")
    assert third["study_id"] == "P102R1-2"

    # the files themselves: the JPEG is the windowed radiograph, heatmaps scale back to the records' maps
    source = np.asarray(nib.load(str(case.image.path)).dataobj).T
    with Image.open(root / "images" / "cxr-1.jpg") as im:
        assert im.format == "JPEG" and im.mode == "L" and im.size == (X, Y)
        jpeg = np.asarray(im, dtype=float)
    assert np.abs(jpeg - fgcxr.window(source)).mean() < 2.0
    definitions = json.loads((root / "definitions.json").read_text())
    assert definitions["definitions"] == {
        "gaze_run-7": {"gaze_run": 7, "params": {"preset": "fgcxr", "regions": "fgcxr", "lead_s": 5.0}}
    }
    by_recording = {"P102R1": case.gaze[:7], "P102R2": case.gaze[7:]}
    for key, records in by_recording.items():
        for rec in records:
            name = f"heatmaps/{key}_{rec.anatomy.replace(' ', '_')}.png"
            png = read_png(root / name)
            heat = rec.load_heatmap()
            entry = definitions["heatmaps"][name]
            assert entry["definition"] == "gaze_run-7" and entry["record"] == f"{key}/{rec.anatomy}"
            assert entry["heatmap_max"] == pytest.approx(float(heat.max()))
            if heat.max() > 0:
                assert png.max() == 255
                np.testing.assert_allclose(
                    png / 255.0 * entry["heatmap_max"], heat, atol=heat.max() / 510 + 1e-6
                )
            else:
                assert not png.any()

    # the mask: one label image, each region's value where it is the last painted, I-AI's threshold its union
    mask = read_png(root / "masks" / "P102R1_mask.png")
    assert mask.shape == (Y, X)
    expected = np.zeros((Y, X), np.uint8)
    for region in fgcxr.MASK_ORDER:
        expected[REGION_MASKS[region]] = fgcxr.MASK_VALUES[region]
    assert np.array_equal(mask, expected)
    assert fgcxr.MASK_VALUES["heart"] == 255 and set(np.unique(mask)) == {0, 255, 205, 180, 130, 105}
    assert np.array_equal(mask > 40, HEART | LEFT | RIGHT)

    # the platform's extras
    index = json.loads((root / "index.json").read_text())
    assert index["release"]["name"] == "cxr-test" and index["splits"] == {"train": 2, "test": 1}
    image_entry = index["images"][0]
    assert image_entry["studies"] == ["P102R1", "P102R2"] and image_entry["readers"] == ["r1", "r2"]
    assert image_entry["report"] == case.report and image_entry["image"] == "images/cxr-1.jpg"
    findings = {f["label_id"]: f for f in image_entry["findings"]}
    assert np.array_equal(read_png(root / findings["finding-1"]["mask_png"]) != 0, finding_mask)
    assert findings["finding-2"]["box"] == [8, 4, 24, 20] and findings["finding-2"]["mask_png"] is None
    assert findings["proposal-3"]["source"] == "weak"
    study = index["study_records"][0]
    assert study["reader"] == "r1" and study["mask_regions"] == list(REGIONS)
    assert [r["name"] for r in study["regions"]] == list(REGIONS)
    assert study["regions"][0]["dwell_s"] == 1.5 and study["regions"][0]["time_to_first_s"] == 0.25


def test_fgcxr_names_what_recordings_lack(tmp_path, sink, gaze_case):
    case, _ = gaze_case
    # a REFLACX recording that got no records (no anatomy), as the release lists it
    bare = CaseRecord("cxr-5", "P5", "S5", "train", image_record(tmp_path, "cxr-5"))
    bare.gaze_lacking = [
        {"recording_id": "P300R7", "reader": "r1", "problems": ["regions: no anatomy for heart, left, right"]}
    ]
    anatomy = CaseRecord(
        "cxr-6",
        "P6",
        "S6",
        "train",
        image_record(tmp_path, "cxr-6"),
        gaze=[
            record(n, "r1", "R6", heatmap(9, 9, 1.0), None, "") for n in ("heart", "left_lung", "right_lung")
        ],
    )
    with pytest.raises(FormatError) as err:
        fgcxr.export([bare, anatomy], sink, META)
    assert err.value.field == "fgcxr"
    assert "cxr-5/P300R7: no gaze anatomy records (regions: no anatomy for heart, left, right)" in str(
        err.value
    )
    assert "cxr-6/R6: lacks the FG-CXR regions left, upper left" in str(err.value)

    # beside a complete recording the same two are skipped, each named
    summary = fgcxr.export([bare, anatomy, case], DirSink(tmp_path / "again"), META)
    assert summary.cases == 1 and len(summary.skipped) == 2
    assert summary.skipped[0].startswith("cxr-5/P300R7: no gaze anatomy records")

    # no gaze at all: said so
    with pytest.raises(FormatError, match="no radiograph of the release has a gaze recording"):
        fgcxr.export([CaseRecord("cxr-2", "P2", "S2", "test", image_record(tmp_path, "cxr-2"))], sink, META)


def test_fgcxr_refuses_what_it_cannot_write(tmp_path, sink, gaze_case):
    case, _ = gaze_case
    ct = dataclasses.replace(case, case_id="ct-1", image=image_record(tmp_path, "ct", shape=(8, 6, 4)))
    with pytest.raises(FormatError) as err:
        fgcxr.export([ct], sink, META)
    assert err.value.field == "ct-1.image"

    # a heatmap in (X, Y) order instead of (rows, columns) is refused, not silently transposed
    wrong = seven("r1", "R1")
    wrong[0] = dataclasses.replace(wrong[0], load_heatmap=lambda: np.zeros((X, Y), np.float32))
    with pytest.raises(FormatError, match="rows, columns") as err:
        fgcxr.export([dataclasses.replace(case, gaze=wrong)], DirSink(tmp_path / "b"), META)
    assert err.value.field == "cxr-1/R1/lower right.heatmap"

    twice = seven("r1", "R1") + [seven("r1", "R1")[0]]
    with pytest.raises(FormatError, match="two gaze records of one anatomy"):
        fgcxr.export([dataclasses.replace(case, gaze=twice)], DirSink(tmp_path / "c"), META)
    with pytest.raises(FormatError, match="appears twice"):
        fgcxr.export([case, case], DirSink(tmp_path / "d"), META)

    case.labels.append(label("finding-9", kind="polygon"))
    summary = fgcxr.export([case], DirSink(tmp_path / "e"), META)
    assert summary.skipped == ["cxr-1/finding-9: kind 'polygon' is not supported by this format"]
    assert summary.labels == 3


# -- all formats: one lazy pass -----------------------------------------------------------------------


@pytest.mark.parametrize("module", [fgcxr, chexpert, radfact], ids=lambda m: m.NAME)
def test_cases_are_read_once_lazily(tmp_path, module, gaze_case):
    case, _ = gaze_case
    events = []

    def stream():
        for i in range(3):
            events.append(f"yield {i + 1}")
            yield dataclasses.replace(case, case_id=f"cxr-{i + 1}")

    out = DirSink(tmp_path / module.NAME)
    module.export(stream(), out, META, progress=lambda n: events.append(f"done {n}"))
    out.close()
    assert events == ["yield 1", "done 1", "yield 2", "done 2", "yield 3", "done 3"]
    assert module.LABEL_KINDS == ("mask", "box", "none")
    assert not (tmp_path / module.NAME / ".scratch").exists()
    assert out.files and all(rel.startswith(f"{module.NAME}/") for rel, _, _ in out.files)

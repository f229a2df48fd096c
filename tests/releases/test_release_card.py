"""The dataset card and croissant.json of releases: the Hugging Face YAML block as PyYAML reads it, the
legend, scanners, de-identification and change log of versions of a release of real data, and every
export's croissant.json loaded and read by mlcroissant, its README's ``configs`` and the card's loading
snippet run in the export's folder."""

import contextlib
import fnmatch
import hashlib
import io
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from releases.card import CardStats, dataset_card
from releases.card_formats import FORMATS_BY_NAME, REX_CATEGORIES
from releases.card_meta import export_readme, front_matter, hub_licence, licence_fields, size_category
from releases.models import ReleaseCase
from releases.records import DirSink
from releases.services import release_create, release_diff, release_export_to
from tests.releases.real import real_release

mlc = pytest.importorskip("mlcroissant", reason="mlcroissant is a test requirement (requirements-dev.txt)")


def card_yaml(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), text[:80]
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_export(folder: Path, fmt: str, splits: dict[str, int], monkeypatch) -> dict:
    """What every export must hold: a README whose YAML block names data files that exist, a croissant.json
    mlcroissant loads without issues whose files match the export and whose record sets read the index,
    and a loading snippet (from the card) that runs in the folder. Returns the croissant document."""
    meta, body = card_yaml((folder / "README.md").read_text())
    assert f"`{fmt}` export" in body
    assert meta["configs"] and meta["configs"][0]["default"] is True
    for config in meta["configs"]:
        data_files = config["data_files"]
        entries = [{"path": data_files}] if isinstance(data_files, str) else data_files
        for entry in entries:
            path = folder / entry["path"]
            assert path.is_file(), entry
            if "field" in config:  # the datasets JSON builder reads json[field] as a list of rows
                rows = json.loads(path.read_text())[config["field"]]
                assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)

    try:  # the Hugging Face datasets library, where installed (not a requirement), loads every config
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        for config in meta["configs"]:
            loaded = datasets.load_dataset(
                str(folder), config["config_name"], cache_dir=str(folder.parent / "hf")
            )
            assert sum(split.num_rows for split in loaded.values()) > 0, config
        shutil.rmtree(folder.parent / "hf", ignore_errors=True)

    # croissant.json: mlcroissant validates it on load (ValidationError on an error), no warnings either
    dataset = mlc.Dataset(jsonld=folder / "croissant.json")
    assert not dataset.metadata.issues.errors and not dataset.metadata.issues.warnings
    doc = json.loads((folder / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    written = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, relpath = line.split("  ", 1)
        written[relpath] = digest
    assert "croissant.json" in written and "README.md" in written
    objects = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    globs = [d["includes"] for d in doc["distribution"] if d["@type"] == "cr:FileSet"]
    for obj in objects:
        path = folder / obj["contentUrl"]
        assert obj["sha256"] == sha256(path) == written[obj["contentUrl"]]
        assert obj["contentSize"] == f"{path.stat().st_size} B"
    listed = {o["contentUrl"] for o in objects}
    for relpath in written:
        if relpath != "croissant.json":
            assert relpath in listed or any(fnmatch.fnmatch(relpath, g) for g in globs), relpath
    records = {}
    for record_set in doc["recordSet"]:
        records[record_set["@id"]] = list(dataset.records(record_set["@id"]))
    assert records, "no record set"
    for split, n in splits.items():
        found = [rows for rid, rows in records.items() if rid.startswith(split)]
        assert found and len(found[0]) == n, (split, records.keys())

    # the card's snippet for this format, as a reader would paste it
    snippet = FORMATS_BY_NAME[fmt].snippet
    assert snippet in body
    monkeypatch.chdir(folder)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, f"<{fmt} snippet>", "exec"), {"__name__": "__snippet__"})
    monkeypatch.undo()
    return {"doc": doc, "records": records, "printed": out.getvalue()}


@pytest.mark.django_db
def test_card_and_croissant_of_a_release_of_real_data(tmp_path, shared_data, make_user, monkeypatch):
    real = real_release(shared_data, tmp_path, make_user)
    v1 = real.release
    meta, body = card_yaml(v1.card)

    # the Hub's metadata block
    assert meta["pretty_name"] == "Real chest CT and radiographs"
    assert meta["license"] == ["cc-by-4.0", "cc-by-nc-nd-4.0"]
    assert meta["language"] == ["en"] and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"][:3] == ["image-segmentation", "object-detection", "image-classification"]
    assert "semantic-segmentation" in meta["task_ids"]
    assert meta["annotations_creators"] == ["expert-generated", "machine-generated"]
    assert {"medical", "radiology", "ct", "x-ray", "3d"} <= set(meta["tags"])
    assert "configs" not in meta  # each export adds its own

    # counts of images per modality and split, scanner and geometry from the real CT's header
    assert re.search(r"\| CR \| 2D \|( \d+ \|){3} 2 \|", body)
    assert re.search(r"\| CT \| 3D \|( \d+ \|){3} 1 \|", body)
    assert "SIEMENS Sensation 10: 1" in body
    assert re.search(r"\| CT \| 1 \| dicom 1 \| 512 × 512 × 30 \| 0\.6465 mm \| 8 mm \| 8 mm \|", body)
    assert "(2 unknown)" in body  # the PNG radiographs carry no spacing

    # legend: the class table with its values, every ReXGroundingCT category, the CheXpert observations
    for value, name in v1.classes.items():
        assert re.search(rf"\| {value} \| `{re.escape(name)}` \| ", body), name
    assert re.search(
        r"\| \d+ \| `left_lung` \| anatomy context mask \(left lung\)[^|]*\| context \| 1 \|", body
    )
    for code, name in REX_CATEGORIES.items():
        assert f"| {code} | {name} |" in body
    assert "| 2d | nodule / mass | typically focal | " in body
    assert re.search(r"\| Support Devices \| 1 \| 0 \| 0 \|", body)
    # snippets of every format, and which ones this mixed release cannot be exported as
    for fmt in FORMATS_BY_NAME.values():
        assert fmt.snippet.rstrip("\n") in body
    assert "cannot be exported as `rexgroundingct` as it is: the format holds 3D images only" in body
    # de-identification as applied at ingest; the patient's date shift itself is secret
    for words in (
        "PS3.15 Annex E",
        "(113107)",
        "(113108",
        "(113111",
        "moved earlier by one offset per patient",
        "between 1 and 1,095 days",
        "`2.25.<integer>`",
        "pseudonym",
        "CR: 0 YES, 2 UNKNOWN",
    ):
        assert words in body, words  # fmt: skip
    shift = abs(real.ct.study.patient.date_shift_days)
    assert f"{shift} days" not in body
    assert "shift" not in body.lower()  # as tests/studies/test_deid_secrets.py asks of every README
    assert "## Intended use and limitations" in body and "The first version of this dataset." in body
    assert "| real-cxr | CheXpert (chest X-ray) | CR | 2 | CC BY-NC-ND 4.0 (radiographs, Open-i) |" in body
    assert "| real-ct | ReXGroundingCT (chest CT) | CT | 1 | CC BY 4.0 (CT, TCIA Lung-PET-CT-Dx) |" in body

    # deterministic: the same card again from the frozen case entries
    stats = CardStats()
    for entry in ReleaseCase.objects.filter(release=v1).order_by("id").values_list("entry", flat=True):
        stats.add(entry)
    assert dataset_card(v1.dataset, v1, stats) == v1.card

    # v2 holds the CT only, v3 the radiographs only: the change log against the previous version
    v2 = release_create(dataset=real.dataset, selection={"sources": "both", "modalities": ["CT"]})
    v3 = release_create(dataset=real.dataset, selection={"sources": "both", "modalities": ["CR"]})
    _, body3 = card_yaml(v3.card)
    diff = release_diff(v3)
    assert diff["from"] == 2 and len(diff["cases"]["added"]) == 2
    changes = body3.split("## Changes", 1)[1].split("\n## ", 1)[0]
    assert "From version 2 to 3:" in changes
    for what, key in (("cases added", ("cases", "added")), ("cases removed", ("cases", "removed")),
                      ("labels added", ("labels", "added")), ("labels removed", ("labels", "removed")),
                      ("labels changed", ("labels", "changed"))):  # fmt: skip
        listed = diff[key[0]][key[1]]
        line = re.search(rf"- {what}: (\d+)(.*)", changes)
        assert int(line[1]) == len(listed), what
        for name in listed[:10]:
            assert name in line[2]
    assert "- classes added: none" in changes
    assert v3.classes == v1.classes  # the class table is kept

    # exports: croissant.json validated and read, README configs, snippets
    splits_v2 = {s: n for s, n in v2.counts["cases_per_split"].items() if n}
    splits_v3 = {s: n for s, n in v3.counts["cases_per_split"].items() if n}
    record_prefix = {"train": "train", "val": "validation", "test": "test"}
    for release, fmt, splits in (
        (v2, "rexgroundingct", splits_v2), (v2, "monai", splits_v2), (v2, "dicom-seg", {}),
        (v3, "chexpert", splits_v3), (v3, "radfact", {}),
    ):  # fmt: skip
        folder = tmp_path / f"v{release.version}-{fmt}"
        sink = DirSink(folder)
        release_export_to(release, fmt, sink)
        sink.close()
        prefixes = {record_prefix[s] if fmt != "rexgroundingct" else s: n for s, n in splits.items()}
        found = check_export(folder, fmt, prefixes, monkeypatch)
        doc = found["doc"]
        assert (
            doc["version"] == f"{release.version}.0.0"
            and doc["datePublished"] == release.frozen_at.isoformat()
        )
        assert doc["license"] == [
            "https://creativecommons.org/licenses/by/4.0/", "https://creativecommons.org/licenses/by-nc-nd/4.0/"
        ]  # fmt: skip
        total = release.counts["cases"]
        if fmt == "dicom-seg":
            assert len(found["records"]["cases"]) == total  # a finding's segment printed (any pk):
            assert re.search(r"finding-\d+ There is a 3\.5 cm spiculated mass", found["printed"])
            assert any(
                d["@type"] == "cr:FileSet" and d["includes"] == "series/*/*.dcm" for d in doc["distribution"]
            )
        if fmt == "radfact":
            assert len(found["records"]["examples"]) == total
        if fmt == "rexgroundingct":
            names = [r[f"{s}_cases/name"] for s in splits for r in found["records"][f"{s}_cases"]]
            assert names and all(n.decode().endswith(".nii.gz") for n in names)
            assert "2d There is a 3.5 cm spiculated mass" in found["printed"]
        if fmt == "chexpert":
            rows = [r for rs in found["records"].values() for r in rs]
            assert len(rows) == total and sum(r["train_labels/Support_Devices"] == 1.0 for r in rows) == 1


def test_fgcxr_export_croissant_and_snippet(tmp_path, monkeypatch):
    """FG-CXR on synthetic seven-region gaze records (no database): the export's tail written as
    ``release_export_to`` writes it, then the same checks."""
    from releases.croissant import croissant, croissant_bytes
    from releases.formats import fgcxr
    from releases.records import CaseRecord
    from tests.releases.synth2d import META, X, Y, gaze, heatmap, image_record, rect

    halves = {"left": rect(4, 44, 34, 60), "right": rect(4, 44, 4, 30)}
    upper, lower = rect(0, Y // 2, 0, X), rect(Y // 2, Y, 0, X)
    masks = {"heart": rect(24, 44, 20, 44), **halves}
    for side in ("left", "right"):
        masks[f"upper {side}"], masks[f"lower {side}"] = halves[side] & upper, halves[side] & lower
    cases = [
        CaseRecord(
            case_id=f"P{n}-s{n}",
            patient_id=f"P{n}",
            study_id=f"2.25.{n}",
            split=split,
            image=image_record(tmp_path, f"img{n}"),
            gaze=[
                gaze(region, "r1", f"rec-{n}", heatmap(Y / 2, X / 2 + k, 1.0 + k), m)
                for k, (region, m) in enumerate(masks.items())
            ],
        )  # fmt: skip
        for n, split in ((1, "train"), (2, "test"))
    ]
    folder = tmp_path / "out"
    sink = DirSink(folder)
    fgcxr.export(cases, sink, META)
    card = front_matter({"pretty_name": "synthetic", "license": "cc-by-4.0"}) + "# synthetic\n\n"
    card += FORMATS_BY_NAME["fgcxr"].snippet
    sink.put_bytes("README.md", export_readme(card, "fgcxr", ["train", "test"], "").encode())
    doc = croissant(
        name="synthetic", title="Synthetic", description="", version=1, licence="CC0", citation="",
        frozen_at=datetime(2025, 1, 2, tzinfo=UTC), fmt_name="fgcxr", splits=["train", "test"],
        files=sink.files,
    )  # fmt: skip
    sink.put_bytes("croissant.json", croissant_bytes(doc))
    with open(folder / "SHA256SUMS", "w") as out:
        sink.files.write_sums(out)
    sink.close()
    found = check_export(folder, "fgcxr", {}, monkeypatch)
    assert [r["studies/split"] for r in found["records"]["studies"]] == [b"train", b"test"]
    assert found["printed"].count("train upper left upper left is clear.") == 1
    assert found["doc"]["license"] == ["https://creativecommons.org/publicdomain/zero/1.0/"]
    sets = {d["includes"] for d in found["doc"]["distribution"] if d["@type"] == "cr:FileSet"}
    assert {"fgcxr/heatmaps/*.png", "fgcxr/images/*.jpg"} <= sets


def test_licences_yaml_and_readme():
    assert hub_licence("CC BY-NC-ND 4.0 (radiographs)") == "cc-by-nc-nd-4.0"
    assert hub_licence("Creative Commons Attribution-NonCommercial-ShareAlike 4.0") == "cc-by-nc-sa-4.0"
    assert hub_licence("CC-BY-4.0") == "cc-by-4.0" and hub_licence("cc0") == "cc0-1.0"
    assert hub_licence("Apache License, Version 2.0") == "apache-2.0"
    assert hub_licence("TCIA Restricted License") is None and hub_licence("submitted") is None
    assert licence_fields("d", "") == {"license": "unknown"}
    assert licence_fields("d", "CC BY 4.0; CC BY 4.0 (other source)") == {"license": "cc-by-4.0"}
    assert licence_fields("d", "CC BY 4.0; PhysioNet Credentialed Health Data License 1.5.0") == {
        "license": "other", "license_name": "d-licence"
    }  # fmt: skip
    assert [size_category(n) for n in (0, 999, 1000, 250_000)] == ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M"]

    awkward = {
        "pretty_name": 'A "quoted": name # not a comment',
        "tags": ["yes", "null", "1.0", "naïve – ünïcode", "line\nbreak"],
        "configs": [
            {"config_name": "x", "data_files": [{"split": "train", "path": "a/*.json"}], "default": True}
        ],
        "empty": [],
    }
    text = front_matter(awkward)
    assert yaml.safe_load(text.strip().strip("-")) == awkward
    card = text + "# Title\n\nbody\n"
    readme = export_readme(card, "radfact", ["train"], fallback_head="")
    meta, body = card_yaml(readme)
    assert meta["configs"] == [
        {"config_name": "grounded_reports", "data_files": "radfact/grounded_reports.json", "default": True}
    ]
    assert meta["pretty_name"] == awkward["pretty_name"]
    assert body.startswith("# Title\n\n> This folder is the `radfact` export")
    # a card frozen before cards had a YAML block gets a head made from the release's counts
    from types import SimpleNamespace

    from releases.card_sections import front_matter as release_head

    counts = {"cases": 1200, "labels_per_kind": {"box": 3, "none": 9}, "labels_per_source": {"weak": 12}}
    head = release_head(
        SimpleNamespace(name="Old", slug="old", licence="MIT"), SimpleNamespace(counts=counts, selection={})
    )
    meta, _ = card_yaml(head + "# Old\n")
    assert meta["license"] == "mit" and meta["size_categories"] == ["1K<n<10K"]
    assert meta["task_categories"] == ["object-detection", "image-classification", "image-to-text"]
    assert meta["annotations_creators"] == ["machine-generated"]
    old = export_readme(
        "# Old card\n", "monai", ["train", "test"], fallback_head=front_matter({"license": "mit"})
    )
    meta, body = card_yaml(old)
    assert meta["license"] == "mit" and [c["field"] for c in meta["configs"]] == ["training", "test"]
    assert body.startswith("# Old card\n")


def test_iai_export_croissant_and_snippet(tmp_path, monkeypatch):
    """I-AI on synthetic anatomy records (no database): its table read by mlcroissant per split, the
    Hugging Face configs name its CSVs, and the card's snippet (pandas, SimpleITK, PIL) runs."""
    from releases.croissant import croissant, croissant_bytes
    from releases.formats import iai
    from releases.records import CaseRecord
    from tests.releases.synth2d import META, image_record
    from tests.releases.test_export_iai import anatomy_set

    cases = [
        CaseRecord(
            f"P{n}-s{n}",
            f"P{n}",
            f"2.25.{n}",
            split,
            image_record(tmp_path, f"img{n}"),
            gaze=anatomy_set(f"P102R{n}"),
        )  # fmt: skip
        for n, split in ((1, "train"), (2, "train"), (3, "test"))
    ]
    folder = tmp_path / "out"
    sink = DirSink(folder)
    iai.export(cases, sink, META)
    card = front_matter({"pretty_name": "synthetic", "license": "cc-by-4.0"}) + "# synthetic\n\n"
    card += FORMATS_BY_NAME["iai"].snippet
    sink.put_bytes("README.md", export_readme(card, "iai", ["train", "test"], "").encode())
    doc = croissant(
        name="synthetic", title="Synthetic", description="", version=1, licence="CC0", citation="",
        frozen_at=datetime(2025, 1, 2, tzinfo=UTC), fmt_name="iai", splits=["train", "test"],
        files=sink.files,
    )  # fmt: skip
    sink.put_bytes("croissant.json", croissant_bytes(doc))
    with open(folder / "SHA256SUMS", "w") as out:
        sink.files.write_sums(out)
    sink.close()
    found = check_export(folder, "iai", {"train": 6, "test": 3}, monkeypatch)  # three types per recording
    assert [r["train_table/_type"] for r in found["records"]["train_table"]] == [b"c", b"l", b"r"] * 2
    assert found["printed"].count("(1, ") == 6  # SimpleITK read each radiograph as one slice

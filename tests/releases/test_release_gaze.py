"""FG-CXR and I-AI releases from the database: two radiographs, one with an EGD-CXR gaze recording (its
anatomy masks and bounding boxes), one with a REFLACX recording and no anatomy, labelled by a gaze run of
the ``fgcxr`` preset, frozen with weak sources and exported. The EGD-CXR recording comes back as one FG-CXR
study whose heatmaps are the run's maps and whose mask holds the run's regions (made again from the
recording's anatomy); the REFLACX recording is named with what it lacks, in both exports."""

import json

import numpy as np
import pandas as pd
from PIL import Image

from labeling.gaze.service import gaze_heatmap_array, gaze_run_execute, gaze_run_get_or_create
from labeling.gaze.sources import recording_region_masks
from labeling.models import GazeAnatomyRecord
from releases.formats import fgcxr
from releases.records import DirSink
from releases.services import dataset_create, release_create, release_export_to
from studies.ingest.gaze.synthetic import EgdSpec, ReflacxSpec, write_egd, write_reflacx
from studies.models import GazeRecording, Scan
from studies.services.gaze import gaze_import
from studies.services.scans import scans_ingest

WIDTH, HEIGHT = 400, 300
WORDS = [("left", 1.0, 1.2), ("lung", 1.2, 1.5), ("is", 1.5, 1.6), ("clear", 1.6, 2.0), (".", 2.0, 2.0)]


def test_fgcxr_and_iai_releases_from_gaze_labels(project, tmp_path):
    folder = tmp_path / "cxr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("cxr1", "cxr2"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8)).save(folder / f"{name}.png")
    assert not scans_ingest(project=project, paths=[folder], workers=1).errors
    first, second = Scan.objects.filter(project=project).order_by("pk")
    boxes = [("cardiac silhouette", 150, 260, 140, 240)]
    egd = write_egd(
        tmp_path / "egd", recordings=[EgdSpec(image_size=(WIDTH, HEIGHT), n_fixations=40, boxes=boxes)]
    )
    assert gaze_import(project=project, path=egd, fmt="egd").errors == []
    GazeRecording.objects.update(scan=first, study=first.study)
    spec = ReflacxSpec(
        id="P102R000001", dicom_id="dcm2", image_size=(WIDTH, HEIGHT), n_fixations=20, words=WORDS
    )
    assert (
        gaze_import(
            project=project, path=write_reflacx(tmp_path / "r", recordings=[spec]), fmt="reflacx"
        ).errors
        == []
    )
    GazeRecording.objects.filter(external_id="P102R000001").update(scan=second, study=second.study)
    run = gaze_run_execute(run=gaze_run_get_or_create(project=project, params={"preset": "fgcxr"}), workers=1)
    assert run.done == 2
    recording = GazeRecording.objects.get(source_format="egd")
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run)}
    assert sorted(records) == sorted(fgcxr.REGIONS)  # the REFLACX recording has none

    release = release_create(
        dataset=dataset_create(slug="gaze", name="Gaze", projects=[project]), selection={"sources": "weak"}
    )
    assert release.counts["gaze_records"] == 7 and release.counts["cases"] == 2
    out = tmp_path / "out"
    summary = release_export_to(release, "fgcxr", DirSink(out))
    assert summary.cases == 1
    [lacking] = summary.skipped
    assert lacking.startswith(f"{project_case(second)}/P102R000001: no gaze anatomy records (")
    assert "regions fgcxr: the recording has no anatomy" in lacking and "preset fgcxr" in lacking

    root = out / "fgcxr"
    full = json.loads((root / "full.json").read_text())
    [(study_id, annotation)] = full.items()
    assert study_id == recording.external_id and annotation["type"] == list(fgcxr.REGIONS)
    assert annotation["dicom_id"] == project_case(first)
    with Image.open(root / "images" / f"{annotation['dicom_id']}.jpg") as im:
        assert im.size == (WIDTH, HEIGHT) and im.mode == "L"
    definitions = json.loads((root / "definitions.json").read_text())
    assert definitions["definitions"][f"gaze_run-{run.pk}"]["params"]["preset"] == "fgcxr"
    regions = recording_region_masks(recording, "fgcxr")
    for region, sentence in zip(annotation["type"], annotation["sentence"], strict=True):
        record = records[region]
        assert sentence == record.caption
        name = f"heatmaps/{study_id}_{region.replace(' ', '_')}.png"
        png = np.asarray(Image.open(root / name))
        np.testing.assert_array_equal(png, fgcxr.heatmap_8bit(gaze_heatmap_array(record.heatmap)))
        assert definitions["heatmaps"][name]["record"] == record.pk
    mask = np.asarray(Image.open(root / "masks" / f"{study_id}_mask.png"))
    np.testing.assert_array_equal(mask, fgcxr.label_map(regions, (HEIGHT, WIDTH)))
    painted = (
        "heart",
        "upper left",
        "lower left",
        "upper right",
        "lower right",
    )  # the halves cover the lungs
    assert set(np.unique(mask)) - {0} == {fgcxr.MASK_VALUES[r] for r in painted}

    out = tmp_path / "iai-out"
    summary = release_export_to(release, "iai", DirSink(out))
    assert summary.cases == 1 and summary.skipped[0].startswith(f"{project_case(second)}/P102R000001: ")
    table = pd.concat([pd.read_csv(out / "iai" / f) for f in ("train.csv", "dev.csv", "test.csv")])
    assert list(table["_type"]) == ["c", "l", "r"]
    assert set(table["reflacx_id"]) == {recording.external_id}
    left = np.asarray(Image.open(out / "iai" / table.iloc[1]["mask (left lung)"])) > 0
    np.testing.assert_array_equal(left, regions["left"])


def project_case(scan: Scan) -> str:
    from releases.labels import case_id

    return case_id(scan)

"""An FG-CXR release from the database: a radiograph with an EGD-CXR gaze recording and its anatomy
masks, labelled by a gaze run, frozen with weak sources and exported; the heatmap array, focus and
anatomy masks come back exactly and on the image's pixel grid."""

import json

import numpy as np
from PIL import Image

from labeling.gaze.service import gaze_heatmap_array, gaze_run_execute, gaze_run_get_or_create
from labeling.models import GazeAnatomyRecord
from releases.records import DirSink
from releases.services import dataset_create, release_create, release_export_to
from studies.ingest.gaze.synthetic import EgdSpec, write_egd
from studies.models import GazeRecording, Scan
from studies.services.gaze import gaze_import
from studies.services.scans import scans_ingest


def test_fgcxr_release_from_gaze_labels(project, tmp_path):
    width, height = 400, 300
    picture = tmp_path / "cxr" / "cxr1.png"
    picture.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(picture)
    assert not scans_ingest(project=project, paths=[picture.parent], workers=1).errors
    scan = Scan.objects.get(project=project)
    assert scan.ndim == 2 and scan.shape == [width, height]
    egd = write_egd(tmp_path / "egd", recordings=[EgdSpec(image_size=(width, height), n_fixations=40)])
    assert gaze_import(project=project, path=egd, fmt="egd").errors == []
    GazeRecording.objects.update(scan=scan, study=scan.study)
    run = gaze_run_execute(run=gaze_run_get_or_create(project=project, params={"method": "auto"}), workers=1)
    assert run.done == 1
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run)}
    assert records

    release = release_create(
        dataset=dataset_create(slug="gaze", name="Gaze", projects=[project]), selection={"sources": "weak"}
    )
    assert release.counts["gaze_records"] == len(records)
    out = tmp_path / "out"
    summary = release_export_to(release, "fgcxr", DirSink(out))
    assert summary.cases == 1
    index = json.loads((out / "fgcxr" / "index.json").read_text())
    [image] = index["images"]
    folder = out / "fgcxr" / image["case_id"]
    doc = json.loads((folder / f"{image['case_id']}.json").read_text())
    shown = np.asarray(Image.open(folder / doc["image"]))
    assert shown.shape == (height, width)
    assert {a["anatomy"] for a in doc["anatomies"]} == set(records)
    for entry in doc["anatomies"]:
        record = records[entry["anatomy"]]
        assert entry["caption"] == record.caption and entry["dwell_s"] == record.dwell_s
        heat = np.load(folder / entry["heatmap_npy"])
        np.testing.assert_array_equal(heat, gaze_heatmap_array(record.heatmap))
        focus = np.asarray(Image.open(folder / entry["focus_png"])) > 0
        with record.focus_mask.open("rb") as fh:
            np.testing.assert_array_equal(focus, np.asarray(Image.open(fh).convert("L")) > 0)
        assert focus.shape == shown.shape == heat.shape
        if entry.get("mask_png"):
            assert (np.asarray(Image.open(folder / entry["mask_png"])) > 0).shape == shown.shape

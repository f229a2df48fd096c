"""Out of the box (issues 15 and 20): ``make demo`` (``manage.py demo_setup``) followed by the release
commands it prints exports the real CT in every 3D format (rexgroundingct, monai, dicom-seg) and the
radiograph in every 2D one (fgcxr, iai, chexpert, radfact), each read as its own side reads it: MONAI's
datalist loader and ``LoadImaged``, highdicom's ``segread``, the re-statement of FG-CXR's loader in
``test_export_fgcxr``, pandas for the CSV tables. The FG-CXR export is non-empty because the demo
radiograph's gaze recording has anatomy, so its FG-CXR-preset gaze run makes the seven regions."""

import json
import shlex
from io import StringIO

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from PIL import Image

from annotation.models import Finding
from studies import demo
from studies.demo import DEMO_ANATOMY, demo_anatomy_masks
from tests.releases.test_export_fgcxr import REGIONS, fgcxr_load, fgcxr_prepare


def test_demo_anatomy_is_where_the_organs_are():
    width, height = 1841, 1955  # RG1_UNCR.dcm
    masks = demo_anatomy_masks(width, height)
    assert sorted(masks) == sorted(DEMO_ANATOMY) and all(m.shape == (height, width) for m in masks.values())
    assert not (masks["heart"] & (masks["left_lung"] | masks["right_lung"])).any()
    # PA view: the patient's right lung on the image's left, the heart towards the patient's left, low
    centre = {name: np.argwhere(m).mean(axis=0) for name, m in masks.items()}  # (row, column)
    assert centre["right_lung"][1] < width / 2 < centre["left_lung"][1]
    assert centre["heart"][1] > width / 2 and centre["heart"][0] > centre["left_lung"][0]


@pytest.mark.django_db
def test_demo_then_its_printed_release_commands_export_every_format(tmp_path, monkeypatch):
    from monai.data import load_decathlon_datalist
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    out = StringIO()
    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=out)
    text = out.getvalue()
    assert "preset fgcxr), 1 of 1 recordings labelled (0 unusable), 7 region records" in text, text
    commands = [shlex.split(line.strip())[1:] for line in text.splitlines() if line.startswith("  manage.py")]
    for dataset, formats in (("demo", demo.FORMATS_3D), ("demo-gaze", demo.FORMATS_2D)):
        mine = [c for c in commands if c[c.index("--dataset") + 1] == dataset]
        assert [c[0] for c in mine] == ["release_create", *["release_export"] * len(formats)], commands
        assert [c[c.index("--format") + 1] for c in mine[1:]] == list(formats)
    assert len(commands) == 2 + len(demo.FORMATS_3D) + len(demo.FORMATS_2D)
    monkeypatch.chdir(tmp_path)  # the printed --out folders are relative
    for command in commands:
        call_command(*command, stdout=StringIO())
    var = tmp_path / "var"
    mass = Finding.objects.get(project__slug="demo", status="accepted")
    voxels = mass.annotations.get(version=mass.current_version).voxels

    # rexgroundingct: the real CT's case, the mass as one entity, the lungs as context
    root = var / "demo-rexgroundingct"
    [case] = json.loads((root / "dataset.json").read_text())["train"]
    assert case["shape"] == [512, 512, 30] and case["categories"] == {"0": "2d"}
    assert "right lower lobe" in case["findings"]["0"] and case["entity_counts"] == {"0": 1}
    segmentation = np.asarray(nib.load(root / "segmentations" / case["name"]).dataobj)
    assert segmentation.shape == (1, 512, 512, 30) and int((segmentation > 0).sum()) == voxels
    assert list((root / "segmentations_context").iterdir())

    # monai: MONAI's own loader reads image, label and the lungs' context on one grid
    root = var / "demo-monai"
    [item] = load_decathlon_datalist(root / "dataset.json", is_segmentation=True, data_list_key="training")
    keys = ["image", "label", "context"]
    loaded = Compose([LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)])(item)
    image, label, context = (np.asarray(loaded[k])[0] for k in keys)
    assert image.shape == label.shape == context.shape == (512, 512, 30)
    assert image.min() == -1024 and image.max() == 1548  # HU, as TCIA published them
    assert int((label > 0).sum()) == voxels and len(np.unique(context[context > 0])) == 2
    assert (context[label > 0] == 0).mean() > 0.5  # the mass lies mostly outside the lungs' masks

    # dicom-seg: the series rebuilt (30 slices) and a SEG that highdicom reads, the mass on its frames
    root = var / "demo-dicom-seg"
    [entry] = json.loads((root / "index.json").read_text())["cases"]
    assert entry["modality"] == "CT" and len(entry["files"]) == 30
    seg = hd.seg.segread(root / entry["seg"])
    segments = {s["category"] or s["code"]: s["segment_number"] for s in entry["segments"]}
    assert {"2d", "left_lung", "right_lung"} <= set(segments)
    pixels = seg.get_volume(segment_numbers=[segments["2d"]]).array
    assert int(pixels.sum()) == voxels

    # fgcxr: one study, seven regions, each holding gaze
    root = var / "demo-gaze-fgcxr" / "fgcxr"
    [study] = fgcxr_prepare(root)
    assert study["study_id"] == "P102R000001" and [r["name"] for r in study["regions"]] == list(REGIONS)
    manifest = json.loads((root / "manifest.json").read_text())
    [loaded] = fgcxr_load(root, manifest["studies"][0]["split"])
    assert loaded["reports"][REGIONS.index("heart")] == "heart size is normal."
    assert "masses" in loaded["reports"][REGIONS.index("right")]
    assert loaded["heatmaps"].shape == (7, 224, 224) and loaded["heatmaps"].max() > 0.9
    assert all(heat.any() for heat in loaded["heatmaps"])  # the reader looked at every region
    mask = np.asarray(Image.open(root / study["anatomy_mask"]))
    assert mask.shape == (1955, 1841) and (mask > 40).mean() > 0.2

    split = manifest["studies"][0]["split"]
    split_file = {"train": "train.csv", "val": "dev.csv", "test": "test.csv"}[split]
    table = pd.read_csv(var / "demo-gaze-iai" / "iai" / split_file)
    assert list(table["_type"]) == ["c", "l", "r"] and set(table["reflacx_id"]) == {"P102R000001"}

    # chexpert: the radiograph, frontal PA, a lung lesion (the gaze on the masses)
    chexpert = var / "demo-gaze-chexpert" / "chexpert"
    rows = pd.read_csv(chexpert / {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}[split])
    assert len(rows) == 1 and (chexpert.parent / rows["Path"][0]).is_file()
    assert (rows["Frontal/Lateral"][0], rows["AP/PA"][0], rows["Lung Lesion"][0]) == ("Frontal", "PA", 1.0)

    # radfact: the report's sentences as the target, the gaze's boxes on the masses as a prediction
    [report] = json.loads((var / "demo-gaze-radfact" / "radfact" / "grounded_reports.json").read_text())
    sentences = [t["text"] for t in report["target"]]
    assert sentences[0].startswith("Multiple round masses") and "Heart size is normal." in sentences
    boxes = [b for p in report["prediction"] for b in p["boxes"] or []]
    assert boxes and all(
        0 <= b["x_min"] < b["x_max"] <= 1 and 0 <= b["y_min"] < b["y_max"] <= 1 for b in boxes
    )

"""Out of the box (issue 15 item 6): ``make demo`` (``manage.py demo_setup``) followed by the release
commands it prints gives a non-empty FG-CXR dataset (and an I-AI one): the demo radiograph's gaze recording
has anatomy, so its FG-CXR-preset gaze run makes the seven regions. The FG-CXR export is read with the
re-statement of FG-CXR's loader in ``test_export_fgcxr``."""

import json
import shlex
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from PIL import Image

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
def test_demo_then_its_printed_release_commands_export_fgcxr(tmp_path, monkeypatch):
    out = StringIO()
    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=out)
    text = out.getvalue()
    assert "preset fgcxr), 1 of 1 recordings labelled (0 unusable), 7 region records" in text, text
    commands = [shlex.split(line.strip())[1:] for line in text.splitlines() if line.startswith("  manage.py")]
    gaze = [c for c in commands if "demo-gaze" in c]
    assert [c[0] for c in gaze] == ["release_create", "release_export", "release_export"], commands
    monkeypatch.chdir(tmp_path)  # the printed --out folders are relative
    for command in gaze:
        call_command(*command, stdout=StringIO())

    root = tmp_path / "var" / "demo-fgcxr" / "fgcxr"
    [study] = fgcxr_prepare(root)
    assert study["study_id"] == "P102R000001" and [r["name"] for r in study["regions"]] == list(REGIONS)
    manifest = json.loads((root / "manifest.json").read_text())
    [loaded] = fgcxr_load(root, manifest["studies"][0]["split"])
    assert loaded["reports"][REGIONS.index("heart")] == "heart size is normal."
    assert loaded["heatmaps"].shape == (7, 224, 224) and loaded["heatmaps"].max() > 0.9
    # every region holds gaze: the recording's fixations fall on its lungs and heart
    assert all(heat.any() for heat in loaded["heatmaps"])
    mask = np.asarray(Image.open(root / study["anatomy_mask"]))
    assert mask.shape == (1955, 1841) and (mask > 40).mean() > 0.2

    split_file = {"train": "train.csv", "val": "dev.csv", "test": "test.csv"}[manifest["studies"][0]["split"]]
    table = pd.read_csv(tmp_path / "var" / "demo-iai" / "iai" / split_file)
    assert list(table["_type"]) == ["c", "l", "r"] and set(table["reflacx_id"]) == {"P102R000001"}

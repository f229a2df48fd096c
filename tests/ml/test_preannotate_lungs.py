"""Lung pre-annotation of the real chest CT series end to end: two proposals on the scan's grid, on the
patient's correct sides by the stored affine, adult-range volume; the CLI's JSON lists them."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from ml.preannotate import PreannotateError, preannotate
from studies.models import Scan
from studies.services.scans import scans_ingest


@pytest.fixture
def real_ct(project, shared_data):
    assert not scans_ingest(project=project, paths=[shared_data / "ct/lungdx-a0002"], workers=1).errors
    return Scan.objects.get(project=project)


def test_lungs_of_the_real_series(real_ct, capsys):
    call_command("preannotate", "--scan", str(real_ct.pk), "--generator", "lungs", "--json")
    out = json.loads(capsys.readouterr().out)
    by_label = {p["label"]: p for p in out["proposals"]}
    assert sorted(by_label) == ["left_lung", "right_lung"]
    total = sum(p["volume_ml"] for p in by_label.values())
    assert 2500 < total < 8000, total
    affine = np.asarray(real_ct.affine)
    from labeling.models import RegionProposal

    centres = {}
    for label, p in by_label.items():
        proposal = RegionProposal.objects.get(pk=p["id"])
        with default_storage.open(proposal.mask.name, "rb") as fh:
            image = nib.Nifti1Image.from_bytes(gzip.decompress(fh.read()))
        mask = np.asarray(image.dataobj) > 0
        assert mask.shape == tuple(real_ct.shape) and int(mask.sum()) == p["pixels"]
        centres[label] = (affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[0]  # RAS x, mm
    assert centres["left_lung"] < centres["right_lung"]  # RAS: +x is the patient's right


def test_lungs_need_a_ct(project, tmp_path):
    from studies import demo

    demo.write_ct_series(tmp_path / "ct", demo.synthetic_chest_ct(shape=(8, 32, 32))[0], (5.0, 1.8, 1.8))
    scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1)
    scan = Scan.objects.get(project=project)
    with pytest.raises(PreannotateError, match="^params: nonsense"):
        preannotate(scan=scan, generator="lungs", params={"nonsense": 1})
    Scan.objects.filter(pk=scan.pk).update(modality="MR")
    scan.refresh_from_db()
    with pytest.raises(PreannotateError, match="^modality: lungs needs a 3D CT"):
        preannotate(scan=scan, generator="lungs")

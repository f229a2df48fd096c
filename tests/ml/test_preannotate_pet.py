"""PET pre-annotation end to end: a stored PET volume (Bq/ml) with real Siemens SUV headers, a report
sentence naming one sphere's SUVmax and image number, the rules PET seeds, and the grown lesion proposal
on the scan's grid (Dice >= 0.8 to the sphere)."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from django.core.files.storage import default_storage

from labeling.services import label_run_execute, label_run_get_or_create
from ml.generators.pet import pet_phantom
from ml.generators.suv import suvbw_factor
from ml.preannotate import PreannotateError, preannotate
from studies.models import Report, Scan
from studies.services.scans import scans_ingest

SPACING = (4.0, 4.0, 3.0)
SPHERES = [
    ((120.0, 110.0, 90.0), 12.0, 8.0),
    ((140.0, 150.0, 90.0), 10.0, 12.0),
    ((70.0, 80.0, 120.0), 15.0, 4.0),
]


@pytest.fixture
def pet_scan(project, shared_data, tmp_path):
    meta = json.loads((shared_data / "pet/suv-metadata/SIEMENS-instances.json").read_text())[0]
    factor = suvbw_factor(meta)
    suv, masks = pet_phantom((64, 64, 60), SPACING, SPHERES)
    affine = np.diag([*SPACING, 1.0])
    nib.save(nib.Nifti1Image((suv / factor).astype(np.float32), affine), tmp_path / "pet.nii.gz")
    assert not scans_ingest(project=project, paths=[tmp_path / "pet.nii.gz"], modality="PT", workers=1).errors
    scan = Scan.objects.get(project=project)
    scan.meta = {**(scan.meta or {}), "pet": meta}
    scan.save(update_fields=["meta"])
    return scan, masks


def test_report_seed_grows_the_named_sphere(project, pet_scan):
    scan, masks = pet_scan
    depth = scan.shape[2]
    k = round(SPHERES[0][0][2] / SPACING[2])  # the SUV 8 sphere's centre slice (Z index)
    Report.objects.create(
        project=project, study=scan.study, external_id="r1", source="text", raw_text="x", checksum="1",
        findings=f"Hypermetabolic right lower lobe nodule with SUVmax 8.0 on image {depth - k}.",
    )  # fmt: skip
    project.label_schema = "petct"
    project.save(update_fields=["label_schema"])
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    outcome = preannotate(scan=scan, generator="pet-suv")
    (proposal,) = outcome.proposals
    assert proposal.code == "suv" and proposal.params["suvmax"] == 8.0 and "SUVmax 8.0" in proposal.text
    with default_storage.open(proposal.mask.name, "rb") as fh:
        mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(fh.read())).dataobj) > 0
    truth = masks[0]
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice >= 0.8, dice
    assert proposal.volume_ml == pytest.approx(mask.sum() * np.prod(SPACING) / 1000)


def test_explicit_seed_and_clear_errors(project, pet_scan):
    scan, masks = pet_scan
    k = round(SPHERES[1][0][2] / SPACING[2])
    outcome = preannotate(scan=scan, generator="pet-suv", params={"suvmax": 12.0, "slice": scan.shape[2] - k})
    assert len(outcome.proposals) == 1
    missed = preannotate(scan=scan, generator="pet-suv", params={"suvmax": 6.0, "slice": scan.shape[2] - k})
    assert missed.proposals == [] and "no_seed" in missed.warnings[0]
    with pytest.raises(PreannotateError, match="^params: scan .* no report sentence"):
        preannotate(scan=scan, generator="pet-suv")
    scan.meta = {}
    scan.save(update_fields=["meta"])
    with pytest.raises(PreannotateError, match="no usable SUV header"):
        preannotate(scan=scan, generator="pet-suv", params={"suvmax": 12.0, "slice": 3})

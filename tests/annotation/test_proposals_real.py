"""Proposals reach the annotator on the real chest CT lungdx-a0002 (30 slices, 512 x 512): the lungs
generator's lungs are the context of the report's findings, and a lesion model's "tumor" mask with a
component in each lung starts the right lower lobe mass with its right component only (issue 16 item 3).
Prints the time findings_made took (the figure of the closing note)."""

import shutil
import time

import numpy as np
import pytest

from annotation.models import Finding, HistoryEvent
from annotation.proposals import read_mask
from annotation.readers import version_mask
from annotation.services import findings_made
from labeling.services import label_run_execute, label_run_get_or_create
from ml.preannotate import Region, _store, preannotate
from studies.models import Report, Scan
from studies.services.scans import scans_ingest
from tests.releases.real import CT_MASS, CT_REPORT


@pytest.mark.slow
@pytest.mark.django_db
def test_real_ct_mass_starts_from_its_side_of_the_tumor_mask(project, shared_data, tmp_path):
    project.label_schema = "rexgroundingct"
    project.save()
    shutil.copytree(shared_data / "ct/lungdx-a0002", tmp_path / "ct")
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    ct = Scan.objects.get(project=project)
    Report.objects.create(
        project=project, study=ct.study, external_id="a0002", source="text", raw_text=CT_REPORT, checksum="c",
        findings=CT_REPORT,
    )  # fmt: skip
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    lungs = {p.label: p for p in preannotate(scan=ct, generator="lungs").proposals}
    assert set(lungs) == {"left_lung", "right_lung"}
    right, left = read_mask(lungs["right_lung"].mask.name), read_mask(lungs["left_lung"].mask.name)
    block = np.zeros(tuple(ct.shape), bool)
    block[CT_MASS] = True
    mass = block & right
    assert mass.sum() > 1000, "the report's mass block lies in the right lung"
    # A block around a voxel of the left lung: a second component of the "tumor" mask.
    where = np.argwhere(left)
    centre = where[len(where) // 2]
    other = np.zeros_like(block)
    other[
        centre[0] - 15 : centre[0] + 15,
        centre[1] - 15 : centre[1] + 15,
        max(0, centre[2] - 2) : centre[2] + 3,
    ] = True
    other &= left
    assert other.sum() > 100
    (tumor,) = _store(
        ct, "model:tumors", {}, [Region(label="tumor", mask=mass | other, code="tumor")], None, None
    )

    t0 = time.perf_counter()
    made = findings_made(project=project)
    seconds = time.perf_counter() - t0
    print(f"\nfindings_made on lungdx-a0002 (512x512x30, 3 proposals): {made.as_dict()} in {seconds:.2f} s")

    finding = Finding.objects.get(project=project, code="2d")
    assert finding.laterality == "right" and finding.location == "right lower lobe"
    v1 = finding.annotations.get(version=1)
    start = version_mask(v1, tuple(ct.shape))
    assert v1.region_proposal_id == tumor.pk and np.array_equal(start, mass)
    event = HistoryEvent.objects.get(finding=finding, action="created")
    assert event.after["start"] == {"proposal": tumor.pk, "rule": "code", "components": [1, 2]}
    assert event.after["context"] == [lungs["right_lung"].pk]
    effusion = Finding.objects.get(project=project, code="2e")  # right side, no lesion there by name
    assert effusion.current_version == 0
    assert HistoryEvent.objects.get(finding=effusion, action="created").after["context"] == [
        lungs["right_lung"].pk
    ]
    emphysema = Finding.objects.get(project=project, code="1c")  # both upper lobes: both lungs
    context = HistoryEvent.objects.get(finding=emphysema, action="created").after["context"]
    assert sorted(context) == sorted([lungs["right_lung"].pk, lungs["left_lung"].pk])
    assert made.created == 3 and made.rules == {"code": 1} and made.with_context == 3

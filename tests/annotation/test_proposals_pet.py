"""PET findings start from the lesion grown from their own SUV seed (issue 16 item 3, rule ``seed``): two
report sentences, each with its SUVmax and image number, two grown lesions; each finding starts from its
sentence's, not from the newest proposal of code ``suv``. Real Siemens SUV headers (shared data)."""

import numpy as np

from annotation.models import Finding, HistoryEvent
from annotation.readers import version_mask
from annotation.services import findings_made
from labeling.services import label_run_execute, label_run_get_or_create
from ml.preannotate import preannotate
from studies.models import Report
from tests.ml.test_preannotate_pet import SPACING, SPHERES, pet_scan  # noqa: F401 (a fixture)


def test_each_suv_finding_starts_from_its_own_seed(project, pet_scan):  # noqa: F811
    scan, masks = pet_scan
    depth = scan.shape[2]
    k0, k1 = (round(SPHERES[i][0][2] / SPACING[2]) for i in (0, 1))
    Report.objects.create(
        project=project, study=scan.study, external_id="r1", source="text", raw_text="x", checksum="1",
        findings=(
            f"Hypermetabolic right lower lobe nodule with SUVmax 8.0 on image {depth - k0}. "
            f"Left hilar node with SUVmax 12.0 on image {depth - k1}."
        ),
    )  # fmt: skip
    project.label_schema = "petct"
    project.save(update_fields=["label_schema"])
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    grown = {p.params["suvmax"]: p for p in preannotate(scan=scan, generator="pet-suv").proposals}
    assert set(grown) == {8.0, 12.0}

    made = findings_made(project=project)
    assert made.created == 2 and made.rules == {"seed": 2}, made.as_dict()
    for finding in Finding.objects.filter(project=project):
        suvmax = finding.finding_proposal.extra["suvmax"]
        v1 = finding.annotations.get(version=1)
        assert v1.region_proposal_id == grown[suvmax].pk
        truth = masks[0 if suvmax == 8.0 else 1]
        mask = version_mask(v1, tuple(scan.shape))
        assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) >= 0.8
        event = HistoryEvent.objects.get(finding=finding, action="created")
        assert event.after["start"] == {"proposal": grown[suvmax].pk, "rule": "seed"}
    assert np.all([f.scan_id == scan.pk for f in Finding.objects.all()])

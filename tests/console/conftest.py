"""Fixtures of the console's page tests: one person per role in project ``alpha``, a logged-in browser
client per person, and a small real CT (a synthetic chest CT written as a DICOM series and ingested) with
a report stating a nodule."""

import pytest
from django.test import Client

from core.models import Role
from core.services import membership_set
from studies import demo
from studies.models import Report, Scan
from studies.services.scans import scans_ingest

REPORT = "No consolidation. There is a 14 mm nodule in the right upper lobe."


@pytest.fixture
def people(make_user, project, manager, annotator, outsider):
    out = {"manager": manager, "annotator": annotator, "outsider": outsider}
    for role in (Role.RADIOLOGIST, Role.RESEARCHER):
        out[role] = make_user(role)
        membership_set(project=project, user=out[role], role=role)
    return out


@pytest.fixture
def browser_for():
    def client_for(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return client_for


@pytest.fixture
def ct_case(project, tmp_path):
    """A ReXGroundingCT project with one CT (8 × 48 × 48 voxels) whose report states a nodule; no label
    run yet."""
    project.label_schema = "rexgroundingct"
    project.qa_sample_rate = 0.0
    project.save()
    spacing = (5.0, 6.0, 6.0)
    volume, _ = demo.synthetic_chest_ct(shape=(8, 48, 48), spacing=spacing)
    demo.write_ct_series(tmp_path / "ct", volume, spacing)
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    scan = Scan.objects.get(project=project)
    Report.objects.create(
        project=project, study=scan.study, external_id="r1", source="text", raw_text=REPORT, checksum="1",
        findings=REPORT,
    )  # fmt: skip
    return scan

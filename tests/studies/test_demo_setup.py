"""``manage.py demo_setup`` (``make demo``) on real anatomy (issue 20): the real chest CT that ships with the
project goes through the de-identifying ingest, the rules labeler finds its report's mass, the lungs
generator proposes both lungs, demo-annotator grounds the mass and demo-radiologist approves it; the
radiograph's report puts its gaze recording and heatmap in the review queue: its masses (started from the
gaze) wait for demo-radiologist's review, its largest mass for demo-annotator to draw, and the closing
message links each account to its case. Running it again adds nothing."""

from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from annotation.models import Annotation, Finding, HistoryEvent, ReviewTask
from annotation.proposals import read_mask
from core.models import Project
from labeling.models import FindingProposal, GazeHeatmap, RegionProposal
from studies import demo
from studies.models import GazeRecording, Report, Scan

pytestmark = pytest.mark.django_db


def _ras_centroid(mask: np.ndarray, affine) -> np.ndarray:
    return (np.asarray(affine) @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[:3]


def test_demo_setup_builds_the_demo_on_real_anatomy(tmp_path):
    out = StringIO()
    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=out)
    text = out.getvalue()
    assert "password" in text and "Scans: 4 stored, 0 already there, 0 errors" in text, text
    assert "Reports: 0 errors, 0 unlinked_ids" in text, text
    project = Project.objects.get(slug="demo")

    # The real CT, de-identified on the way in like any upload
    ct = Scan.objects.get(project=project, modality="CT", shape=[512, 512, 30])
    assert np.allclose(ct.spacing, [0.646484375, 0.646484375, 8.0])
    assert ct.study.study_uid != demo.REAL_CT_STUDY_UID and ct.series_uid.startswith("2.25.")
    assert "Lung_Dx" not in str(ct.meta) and "Lung_Dx" not in str(ct.study.patient.__dict__)

    # Both reports linked to their studies by Study UID; the rules labeler reads the CT's mass
    radiograph = Scan.objects.get(project=project, name="RG1_UNCR")
    ct_report = Report.objects.get(project=project, study=ct.study)
    assert Report.objects.filter(project=project, study=radiograph.study).count() == 1
    mass = FindingProposal.objects.filter(report=ct_report, assertion="present", code="2d").order_by("id")
    first = mass.first()
    assert (first.laterality, first.location, first.size_mm, first.extra["region"]) == (
        "right",
        "right lower lobe",
        53.0,
        "L",
    )
    assert not FindingProposal.objects.filter(report=ct_report, assertion="present").exclude(code="2d")

    # The lungs generator's two lungs, each on the patient's side, adult volumes
    lungs = {p.label: p for p in RegionProposal.objects.filter(scan=ct, source="lungs")}
    assert sorted(lungs) == ["left_lung", "right_lung"]
    assert 2500 < sum(p.volume_ml for p in lungs.values()) < 6000
    centre = {label: _ras_centroid(read_mask(p.mask.name), ct.affine) for label, p in lungs.items()}
    assert centre["right_lung"][0] > centre["left_lung"][0]  # RAS: +x is the patient's right

    # The mass grounded by demo-annotator and approved by demo-radiologist, on the right, where clicked
    finding = Finding.objects.get(project=project, scan=ct, status="accepted")
    assert finding.code == "2d" and finding.finding_proposal_id == first.pk
    version = Annotation.objects.get(finding=finding, version=finding.current_version)
    volume_ml = version.voxels * float(np.prod(ct.spacing)) / 1000
    assert 35 < volume_ml < 90, volume_ml  # a 5.3 x 4.8 x 4.0 cm mass
    grounded = read_mask(version.mask.name)
    where = _ras_centroid(grounded, ct.affine)
    between = (centre["right_lung"] + centre["left_lung"]) / 2
    assert where[0] > between[0] + 40  # in the right hemithorax
    x, y, z = demo.REAL_CT_MASS_CLICK_LPS
    assert np.linalg.norm(where - np.array([-x, -y, z])) < 25  # around the click, mm
    assert not (grounded & read_mask(lungs["left_lung"].mask.name)).any()
    people = set(HistoryEvent.objects.filter(finding=finding).values_list("user__username", flat=True))
    assert {"demo-annotator", "demo-radiologist"} <= people
    assert "Review: the CT's mass finding is accepted" in text
    # the Impression's sentence on the same mass is a second span of that finding, not a second task
    assert not Finding.objects.filter(project=project, scan=ct).exclude(pk=finding.pk).exists()
    assert sorted(finding.spans.values_list("section", flat=True)) == ["findings", "impression"]

    # The radiograph's report makes findings, so its gaze recording and heatmap reach the review queue
    gaze = GazeRecording.objects.get(project=project)
    assert gaze.scan == radiograph and gaze.fixation_count == len(demo.demo_gaze_fixations()) == 22
    assert GazeHeatmap.objects.filter(recording=gaze).exists()
    task = ReviewTask.objects.filter(finding__scan=radiograph).order_by("id").first()
    assert task is not None and task.finding.code == "2d" and task.finding.laterality == "bilateral"
    assert task.stage == "review" and task.finding.current_version == 1  # for demo-radiologist
    largest = ReviewTask.objects.get(finding__scan=radiograph, stage="annotate")
    assert (
        largest.finding.text == demo.RADIOGRAPH_LARGEST_MASS and largest.assignee.username == "demo-annotator"
    )
    assert largest.finding.spans.get().text == demo.RADIOGRAPH_LARGEST_MASS
    # Each demo account's case, linked in the closing message
    assert "demo-annotator: the radiograph's largest mass to draw" in text
    assert f"/review/demo/?task={largest.pk}" in text and f"/review/demo/?task={task.pk}" in text
    assert f"/review/demo/?finding={finding.pk}" in text  # the approved CT mass, read-only
    client = APIClient()
    client.force_login(get_user_model().objects.get(username="demo-annotator"))
    case = client.get(f"/api/tasks/{task.pk}/")
    assert case.status_code == 200, case.content
    [recording] = case.json()["gaze"]
    heatmap = client.get(recording["heatmap_png"])
    assert heatmap.status_code == 200 and heatmap.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert case.json()["start"], case.json()["start"]  # version 1 from the gaze on the masses

    # Again: nothing new
    kinds = (Scan, Report, Finding, RegionProposal, GazeRecording)
    counts = [m.objects.filter(project=project).count() for m in kinds]
    heatmaps = GazeHeatmap.objects.count()
    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=StringIO())
    again = [m.objects.filter(project=project).count() for m in kinds]
    assert again == counts and GazeHeatmap.objects.count() == heatmaps

"""One finding, one task: mentions of one entity in Findings and Impression become one finding with several
spans; the API names codes in words and gives location and size; list endpoints make a fixed number of
queries; findings made before spans existed get theirs from the migration."""

import importlib

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.findings import findings_made, mentions_match
from annotation.models import Finding, FindingSpan, HistoryEvent, ReviewTask
from annotation.services import finding_create
from core.models import Role
from core.services import membership_set
from labeling.models import FindingProposal
from tests.annotation.factories import review_case

FINDINGS = "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."
IMPRESSION = (
    "1. Right upper lobe nodule measuring 14 mm, suspicious. 2. Small left pleural effusion. "
    "3. Nodule in the left lower lobe."
)


@pytest.fixture
def case(project, tmp_path):
    return review_case(project, tmp_path, findings=FINDINGS, impression=IMPRESSION)


@pytest.fixture
def ann(make_user, project):
    user = make_user("ann")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


def test_the_same_nodule_in_findings_and_impression_is_one_finding_with_two_spans(project, case):
    by_code = {}
    for f in Finding.objects.filter(project=project).prefetch_related("spans"):
        by_code.setdefault(f.code, []).append(f)
    # Given five mentions: two of the right upper lobe nodule, two of the effusion, one left lower lobe nodule
    assert FindingProposal.objects.filter(assertion="present").count() == 5
    # Then three findings, three tasks.
    assert sorted((c, len(fs)) for c, fs in by_code.items()) == [("2d", 2), ("2e", 1)]
    assert ReviewTask.objects.filter(project=project).count() == 3
    rul = next(f for f in by_code["2d"] if f.location == "right upper lobe")
    lll = next(f for f in by_code["2d"] if f.location == "left lower lobe")
    assert (rul.laterality, rul.size_mm) == ("right", 14.0)
    assert [(s.section, s.text) for s in rul.spans.all()] == [
        ("findings", "There is a 14 mm nodule in the right upper lobe."),
        ("impression", "Right upper lobe nodule measuring 14 mm, suspicious."),
    ]
    for span in rul.spans.all():
        assert getattr(rul.report, span.section)[span.start : span.end] == span.text
    assert [s.section for s in lll.spans.all()] == ["impression"]
    [effusion] = by_code["2e"]
    assert [s.section for s in effusion.spans.all()] == ["findings", "impression"]
    assert HistoryEvent.objects.filter(action="merged").count() == 2
    assert HistoryEvent.objects.filter(action="created").count() == 3
    # And made again, nothing changes.
    again = findings_made(project=project)
    assert (again.created, again.merged) == (0, 0) and Finding.objects.count() == 3


def test_mentions_match_in_another_section_with_the_same_or_unsaid_attributes():
    finding = Finding(code="2d", laterality="right", location="right upper lobe", size_mm=14.0)
    mention = FindingProposal(code="2d", laterality="right", location="right upper lobe", size_mm=None)
    mention.section = "impression"
    assert mentions_match(finding, {"findings"}, mention)  # Impression leaves the size out
    assert not mentions_match(finding, {"impression"}, mention)  # the same section: another nodule
    mention.size_mm = 14.0
    assert not mentions_match(finding, {"findings", "impression"}, mention)  # one mention per section
    mention.size_mm = 10.0
    assert mentions_match(Finding(code="2d", size_mm=10.4), {"findings"}, mention)  # 1 cm and 10.4 mm
    mention.size_mm = 6.0
    assert not mentions_match(finding, {"findings"}, mention)  # another size: another nodule
    mention.size_mm, mention.location = 14.0, "left lower lobe"
    assert not mentions_match(finding, {"findings"}, mention)
    mention.location, mention.code = "right upper lobe", "2e"
    assert not mentions_match(finding, {"findings"}, mention)


def test_the_api_names_codes_and_gives_place_size_and_spans(project, case, ann, api_client):
    client = api_client(ann)
    listed = client.get(reverse("finding-list"), {"code": "2d"}).json()["results"]
    rul = next(f for f in listed if f["location"] == "right upper lobe")
    assert rul["code_name"] == "nodule / mass" and rul["code"] == "2d"
    assert rul["laterality"] == "right" and rul["size_mm"] == 14.0
    assert [s["section"] for s in rul["spans"]] == ["findings", "impression"]
    assert (rul["section"], rul["start"], rul["end"]) == (
        rul["spans"][0]["section"],
        rul["spans"][0]["start"],
        rul["spans"][0]["end"],
    )
    opened = client.get(reverse("next-task", args=[project.slug]), {"stage": "annotate"}).json()
    assert {f["code_name"] for f in opened["findings"]} == {"nodule / mass", "pleural effusion / thickening"}
    assert all(f["spans"] for f in opened["findings"]) and opened["submission"] is None


def _queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as seen:
        assert client.get(url, params or {}).status_code == 200
    return len(seen.captured_queries)


def test_list_and_case_endpoints_make_as_many_queries_for_many_findings_as_for_few(
    project, case, ann, api_client
):
    client = api_client(ann)
    task = ReviewTask.objects.order_by("id").first()
    urls = [reverse("finding-list"), reverse("task-detail", args=[task.pk]), reverse("history-list")]
    few = [_queries(client, url) for url in urls]
    report = case.study.reports.get()
    for n in range(6):  # six more findings of the study, each with its span
        finding_create(
            project=project, user=ann, study=case.study, scan=case, text=f"extra {n}", code="2h",
            section="findings", start=0, end=10,
        )  # fmt: skip
    assert Finding.objects.count() == 9 and FindingSpan.objects.count() >= 11 and report.findings
    many = [_queries(client, url) for url in urls]
    assert many == few, f"queries {few} for 3 findings, {many} for 9"
    assert few[0] <= 6  # projects, researcher roles, count, findings with tasks, spans (+ session)


def test_findings_made_before_spans_get_their_span_and_size_from_the_migration(project, case):
    finding = Finding.objects.filter(code="2d", location="right upper lobe").get()
    FindingSpan.objects.filter(finding=finding).delete()  # as a finding of before the migration
    Finding.objects.filter(pk=finding.pk).update(size_mm=None)
    FindingSpan.objects.exclude(finding=finding).delete()
    migration = importlib.import_module("annotation.migrations.0003_spans_and_qa_reviewer")
    migration.spans_from_findings(apps, None)
    finding.refresh_from_db()
    [span] = finding.spans.all()
    assert (span.section, span.start, span.end, span.text) == (
        finding.section,
        finding.start,
        finding.end,
        finding.text,
    )
    assert span.finding_proposal_id == finding.finding_proposal_id and finding.size_mm == 14.0
    assert FindingSpan.objects.count() == Finding.objects.filter(start__isnull=False).count()


def test_a_finding_added_by_hand_has_its_span_and_with_several_readers_its_reading(
    project, case, ann, api_client
):
    project.readers_per_finding = 2
    project.save()
    text = case.study.reports.get().findings
    made = api_client(ann).post(
        reverse("finding-create", args=[project.slug]),
        {"study_id": case.study_id, "scan_id": case.pk, "text": "small left pleural effusion", "code": "2e",
         "section": "findings", "start": text.index("Small left"), "end": len(text)},
        format="json",
    )  # fmt: skip
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["reading"]["index"] == 1 and body["reading"]["reader"] == "ann"
    assert body["finding"]["spans"] == [
        {"section": "findings", "start": text.index("Small left"), "end": len(text),
         "text": "small left pleural effusion"}
    ]  # fmt: skip
    assert body["finding"]["code_name"] == "pleural effusion / thickening"

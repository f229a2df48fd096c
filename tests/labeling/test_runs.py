"""Label runs over stored reports: proposals with exact spans, idempotent re-runs, resume, API, CLI."""

import csv
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from labeling.labelers import RulesLabeler
from labeling.models import FindingProposal, LabelRun, RunReport
from labeling.services import label_run_execute, label_run_get_or_create
from labeling.types import CHEXPERT_OBSERVATIONS
from studies.models import Report
from studies.services.reports import reports_import

pytestmark = pytest.mark.django_db

REPORTS = [
    (
        "r1",
        "The heart is enlarged. There is a small right pleural effusion. No pneumothorax.",
        "Cardiomegaly.",
    ),
    ("r2", "Lungs are clear. No focal consolidation, effusion or pneumothorax.", "No acute disease."),
    (
        "r3",
        "Possible left lower lobe atelectasis. Cannot exclude pneumonia.",
        "Atelectasis versus pneumonia.",
    ),
]


@pytest.fixture
def reports(project, tmp_path):
    path = tmp_path / "reports.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uid", "findings", "impression"])
        w.writerows(REPORTS)
    reports_import(project=project, csv_path=path, id_column="uid", text_columns=["findings", "impression"])
    assert Report.objects.filter(project=project).count() == 3
    return path


def test_run_proposes_findings_with_exact_spans(project, reports):
    run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert (run.status, run.total, run.done, run.failed) == ("succeeded", 3, 3, 0)
    proposals = list(FindingProposal.objects.filter(run=run).select_related("report"))
    assert run.proposals == len(proposals) > 0
    for p in proposals:
        text = getattr(p.report, p.section)
        sentence = text[p.start : p.end]
        assert p.phrase and sentence.strip() and p.end <= len(text)
    r1 = {(p.code, p.assertion) for p in proposals if p.report.external_id == "r1"}
    assert ("Cardiomegaly", "present") in r1 and ("Pleural Effusion", "present") in r1
    assert ("Pneumothorax", "absent") in r1
    effusion = next(p for p in proposals if p.report.external_id == "r1" and p.code == "Pleural Effusion")
    assert effusion.laterality == "right"


def test_rerun_with_same_settings_creates_no_duplicates(project, reports):
    first = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    count = FindingProposal.objects.count()
    again = label_run_get_or_create(project=project, labeler="rules")
    assert again.pk == first.pk
    label_run_execute(run=again)
    assert FindingProposal.objects.count() == count and LabelRun.objects.count() == 1


def test_failed_report_is_recorded_and_retried_on_resume(project, reports, monkeypatch):
    """Fault injection: the labeler raises on one report (a stand-in for a crash on bad input)."""
    real = RulesLabeler.label

    def flaky(self, sections, *, schema):
        if "Possible left lower lobe" in sections["findings"]:
            raise RuntimeError("labeler crashed")
        return real(self, sections, schema=schema)

    monkeypatch.setattr(RulesLabeler, "label", flaky)
    run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert (run.done, run.failed) == (2, 1)
    failed = RunReport.objects.get(run=run, ok=False)
    assert failed.report.external_id == "r3" and "labeler crashed" in failed.error
    monkeypatch.setattr(RulesLabeler, "label", real)
    run = label_run_execute(run=run)
    assert (run.done, run.failed) == (3, 0)
    assert FindingProposal.objects.filter(run=run, report=failed.report).exists()


def test_partial_run_resumes_without_duplicates(project, reports):
    """A run stopped after some reports (as a killed worker leaves it) resumes where it stopped."""
    ids = list(Report.objects.order_by("pk").values_list("pk", flat=True))
    run = label_run_get_or_create(project=project, labeler="rules")
    label_run_execute(run=run, report_ids=ids[:1])
    partial = FindingProposal.objects.count()
    run = label_run_execute(run=run)
    assert run.done == 3 and FindingProposal.objects.filter(report_id=ids[0]).count() == partial
    fresh = FindingProposal.objects.count()
    FindingProposal.objects.all().delete()
    RunReport.objects.all().delete()
    label_run_execute(run=run)
    assert FindingProposal.objects.count() == fresh


def test_api_start_follow_and_filter(
    project, manager, annotator, outsider, api_client, reports, django_capture_on_commit_callbacks
):
    client = api_client(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("label-runs", args=[project.slug]), {"labeler": "rules"}, format="json"
        )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    detail = client.get(reverse("label-run-detail", args=[run_id])).json()
    assert detail["status"] == "succeeded" and detail["progress"] == 1.0 and detail["schema"] == "chexpert"
    found = client.get(
        reverse("proposal-list"), {"run": run_id, "code": "Pneumothorax", "assertion": "absent"}
    )
    assert found.json()["count"] >= 2
    assert (
        api_client(annotator).post(reverse("label-runs", args=[project.slug]), {}, format="json").status_code
        == 403
    )
    assert api_client(outsider).get(reverse("label-run-detail", args=[run_id])).status_code == 404
    assert api_client(outsider).get(reverse("proposal-list")).json()["count"] == 0
    bad = client.post(reverse("label-runs", args=[project.slug]), {"report_ids": [999999]}, format="json")
    assert bad.status_code == 400 and "report_ids" in bad.json()


def test_cli_csv_mode_writes_chexpert_csv_and_jsonl(reports, tmp_path):
    out, jsonl = tmp_path / "labels.csv", tmp_path / "labels.jsonl"
    call_command(
        "label_reports", "--csv", str(reports), "--id-column", "uid", "--text-columns", "findings,impression",
        "--out", str(out), "--jsonl", str(jsonl), stdout=StringIO(),
    )  # fmt: skip
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["uid", *CHEXPERT_OBSERVATIONS] and [r[0] for r in rows[1:]] == ["r1", "r2", "r3"]
    assert all(v in {"1.0", "0.0", "-1.0", ""} for r in rows[1:] for v in r[1:])
    r1 = dict(zip(rows[0], rows[1]))
    assert r1["Cardiomegaly"] == "1.0" and r1["Pneumothorax"] == "0.0" and r1["No Finding"] in {"", "0.0"}
    r2 = dict(zip(rows[0], rows[2]))
    assert r2["No Finding"] == "1.0"
    records = [json.loads(line) for line in open(jsonl)]
    assert [r["id"] for r in records] == ["r1", "r2", "r3"]
    assert all(
        {"phrase", "section", "start", "end", "assertion", "code"} <= set(p)
        for r in records
        for p in r["proposals"]
    )


def test_cli_project_mode(project, reports):
    out = StringIO()
    call_command("label_reports", "--project", project.slug, stdout=out, stderr=StringIO())
    assert "3 of 3 reports labeled, 0 failed" in out.getvalue()


def test_llm_run_records_how_it_asked_and_labels_through_the_endpoint(project, reports, llm_server, settings):
    """The llm labeler through a full run against the loopback chat-completions server."""
    settings.LLM_BASE_URL = llm_server.base_url
    settings.LLM_MODEL = "loopback-model"
    from tests.labeling.llm_server import ok

    def reply(sentence, code, assertion):
        found = {"sentence": sentence, "section": "findings", "phrase": "", "assertion": assertion,
                 "laterality": "", "location": "", "size_mm": None, "code": code}  # fmt: skip
        return ok({"findings": [found]})

    llm_server.push(
        reply("The heart is enlarged.", "Cardiomegaly", "present"),
        reply("No focal consolidation, effusion or pneumothorax.", "Pneumothorax", "absent"),
        reply("Possible left lower lobe atelectasis.", "Atelectasis", "uncertain"),
    )
    run = label_run_get_or_create(project=project, labeler="llm", params={"concurrency": 1})
    recorded = run.params["recorded"]
    assert recorded["model"] == "loopback-model" and recorded["temperature"] == 0 and "seed" in recorded
    assert "api_key" not in json.dumps(run.params).lower()
    run = label_run_execute(run=run)
    assert (run.status, run.done, run.failed, run.proposals) == ("succeeded", 3, 0, 3)
    assert run.tokens_in > 0 and run.tokens_out > 0
    atelectasis = FindingProposal.objects.get(run=run, code="Atelectasis")
    assert atelectasis.assertion == "uncertain"
    text = atelectasis.report.findings
    assert text[atelectasis.start : atelectasis.end] == "Possible left lower lobe atelectasis."
    assert [r["model"] for r in llm_server.requests] == ["loopback-model"] * 3
    # a re-run with the same settings is the same run and asks the endpoint nothing (cache, resume)
    again = label_run_execute(
        run=label_run_get_or_create(project=project, labeler="llm", params={"concurrency": 1})
    )
    assert again.pk == run.pk and len(llm_server.requests) == 3


def test_ensemble_run_flags_disagreements_for_review(
    project, manager, api_client, reports, llm_server, settings
):
    from tests.labeling.llm_server import ok

    settings.LLM_BASE_URL = llm_server.base_url
    settings.LLM_MODEL = "loopback-model"
    disagree = {"sentence": "The heart is enlarged.", "section": "findings", "phrase": "",
                "assertion": "absent", "laterality": "", "location": "", "size_mm": None,
                "code": "Cardiomegaly"}  # fmt: skip
    llm_server.push(ok({"findings": [disagree]}), ok({"findings": []}), ok({"findings": []}))
    params = {"members": [{"labeler": "rules"}, {"labeler": "llm", "concurrency": 1}], "concurrency": 1}
    run = label_run_execute(run=label_run_get_or_create(project=project, labeler="ensemble", params=params))
    assert run.status == "succeeded" and run.done == 3
    flagged = FindingProposal.objects.filter(run=run, disagreement=True)
    heart = flagged.get(report__external_id="r1", code="Cardiomegaly", section="findings")
    assert heart.assertion == "uncertain" and heart.extra["disagreement"] is True
    listed = api_client(manager).get(reverse("proposal-list"), {"run": run.pk, "disagreement": "true"}).json()
    assert listed["count"] == flagged.count() and heart.pk in [p["id"] for p in listed["results"]]


def test_llm_without_a_model_is_a_clear_error(project, manager, api_client, reports, settings):
    settings.LLM_MODEL = ""
    response = api_client(manager).post(
        reverse("label-runs", args=[project.slug]), {"labeler": "llm"}, format="json"
    )
    assert response.status_code == 400 and "LLM_MODEL" in str(response.json()["labeler"])
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="LLM_MODEL"):
        call_command("label_reports", "--project", project.slug, "--labeler", "llm", stdout=StringIO())


def test_cli_csv_mode_names_the_row_of_a_bad_row(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("uid,findings,impression\nr1,No effusion.,Normal.\nr2,,\n")
    err = StringIO()
    call_command(
        "label_reports", "--csv", str(path), "--id-column", "uid", "--text-columns", "findings,impression",
        "--out", str(tmp_path / "out.csv"), stdout=StringIO(), stderr=err,
    )  # fmt: skip
    assert "in.csv [row 3]: no report text" in err.getvalue()
    assert len(list(csv.reader(open(tmp_path / "out.csv")))) == 2

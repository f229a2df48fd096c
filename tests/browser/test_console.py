"""The manager's console in a real browser (Chromium through Playwright) against a live server: a manager
uploads the real CT series (Lung-PET-CT-Dx A0002, 30 DICOM slices) with its report and sees the ingest job
finish, starts a rules label run and a pre-annotation, makes tasks from the proposals, sees the queue per
person, freezes a release, exports it and downloads it. Progress bars state their percentage in text; every
control of every page is reached with Tab and shows a visible focus outline. Screenshots go to
/work/notes/console-*.png (NOTES below) and test-artifacts/."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pydicom
import pytest

from annotation.models import Finding
from annotation.services import task_next
from core.jobs import job_create, job_progress, job_start, job_succeed
from core.models import Role
from core.services import membership_set, project_create
from labeling.models import LabelRun
from releases.models import DatasetRelease, ReleaseExport
from studies.models import Report, Scan
from tests.browser.ui import ARGS, ARTIFACTS, CHROMIUM, PASSWORD, TIMEOUT_MS
from tests.conftest import SHARED_DATA, need_service

NOTES = Path("/work/notes")
CT = SHARED_DATA / "ct" / "lungdx-a0002"
REPORT = "Findings: There is a 14 mm nodule in the right upper lobe. No pleural effusion."
FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea"


@pytest.fixture
def chromium(monkeypatch):
    """Chromium alone: the console needs no review bundle."""
    if not CHROMIUM.exists():
        need_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "pip install -r requirements-dev.txt")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
    if NOTES.is_dir():
        page.screenshot(path=str(NOTES / f"console-{name}.png"), full_page=True)


def messages(page) -> str:
    return page.inner_text(".messages") if page.query_selector(".messages") else ""


def tab_through(page) -> list[dict]:
    """Load the page afresh and press Tab until focus comes back to the start; every control must have
    been focused once, each with a visible focus outline and a label. Returns what was focused."""
    page.goto(page.url)
    controls = page.eval_on_selector_all(
        FOCUSABLE,
        """els => els.filter(e => !e.disabled && e.offsetParent !== null)
                  .map(e => e.outerHTML.slice(0, 80))""",
    )
    seen: list[dict] = []
    for _ in range(len(controls) + 5):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => {
              const e = document.activeElement;
              if (!e || e === document.body) return null;
              const s = getComputedStyle(e);
              const label = e.labels && e.labels.length ? e.labels[0].innerText : (e.innerText || '').trim();
              return {html: e.outerHTML.slice(0, 80), outline: s.outlineStyle,
                      width: parseFloat(s.outlineWidth), label};
            }"""
        )
        if focused is None or (seen and focused["html"] == seen[0]["html"]):
            break
        seen.append(focused)
    reached = [f["html"] for f in seen]
    missing = [c for c in controls if c not in reached]
    assert not missing, f"{page.url}: never reached with Tab: {missing[:5]}"
    hidden = [f["html"] for f in seen if f["outline"] in ("none", "") or f["width"] < 2]
    assert not hidden, f"{page.url}: focus not visible on {hidden[:5]}"
    assert "Skip to main content" in seen[0]["html"], "the skip link comes first"
    unlabelled = [
        f["html"] for f in seen if f["html"].startswith(("<input", "<select", "<textarea")) and not f["label"]
    ]
    assert not unlabelled, f"{page.url}: controls without a label: {unlabelled}"
    return seen


def progress_text_agrees(page) -> None:
    """Every progress bar states its value in words beside it (colour is never the only signal)."""
    for job in page.query_selector_all("[data-job]"):
        value = job.eval_on_selector("progress", "p => p.value")
        text = job.inner_text()
        assert f"{round(value)} %" in text, text
        assert job.get_attribute("data-status") in text, text


@pytest.fixture
def lungs(db, make_user):
    if not CT.is_dir():
        pytest.skip(f"the real CT {CT} is absent")
    project = project_create(slug="lungs", name="Lung CT", label_schema="rexgroundingct")
    project.qa_sample_rate = 0.0
    project.save(update_fields=["qa_sample_rate"])
    boss = make_user("boss")
    membership_set(project=project, user=boss, role=Role.MANAGER)
    reader = make_user("reader")
    membership_set(project=project, user=reader, role=Role.ANNOTATOR)
    return project, boss, reader


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_manager_runs_a_project_from_the_browser(chromium, live_server, lungs, tmp_path):
    project, _boss, reader = lungs
    files = sorted(CT.glob("*.dcm"))
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    reports = tmp_path / "reports.csv"
    with open(reports, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uid", "findings"])
        writer.writerow([study_uid, REPORT])

    page = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
    page.set_default_timeout(TIMEOUT_MS * 4)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Given the manager logs in from the home page and opens the console.
    page.goto(f"{live_server.url}/")
    page.click("text=Log in")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.click("text=Project console")
    page.wait_for_url("**/console/")
    assert "Manage lungs" in page.inner_text("main")
    shot(page, "projects")
    tab_through(page)
    page.click("text=Manage lungs")
    page.wait_for_url("**/console/lungs/")
    shot(page, "overview")
    tab_through(page)

    # When they upload the CT's 30 slices with the report CSV (linked by the study's UID).
    page.click("nav.tools >> text=Uploads")
    tab_through(page)
    page.set_input_files("#id_files", [str(f) for f in files])
    page.set_input_files("#id_reports", str(reports))
    page.fill("#id_report_id_column", "uid")
    page.fill("#id_report_text_columns", "findings")
    page.select_option("#id_report_link", "study-uid")
    shot(page, "uploads")
    page.click("text=Upload and ingest")
    page.wait_for_url("**/console/lungs/jobs/*/")
    page.wait_for_selector("[data-job][data-status=succeeded]")
    # Then the job page shows it finished, in words and numbers, and the series and report are stored.
    assert "Upload of 30 files received" in messages(page)
    assert "100 %" in page.inner_text("[data-job]") and "succeeded" in page.inner_text("[data-job]")
    progress_text_agrees(page)
    shot(page, "upload-job")
    scan = Scan.objects.get(project=project)
    assert tuple(scan.shape) == (512, 512, 30) and scan.modality == "CT"
    assert Report.objects.filter(project=project, study=scan.study).count() == 1

    # A job still running is followed in the page: its bar and its text move without a reload.
    job = job_create(project=project, kind="release_export")
    job_start(job_id=job.pk)
    job_progress(job_id=job.pk, progress=0.4, message="writing case 2 of 5")
    page.goto(f"{live_server.url}/console/lungs/jobs/{job.pk}/")
    assert "40 %" in page.inner_text("[data-job]")
    job_progress(job_id=job.pk, progress=0.7, message="writing case 4 of 5")
    page.wait_for_function("() => document.querySelector('[data-job-percent]').textContent === '70 %'")
    assert "writing case 4 of 5" in page.inner_text("[data-job]")
    assert page.eval_on_selector("progress", "p => p.value") == 70
    shot(page, "job-progress")
    job_succeed(job_id=job.pk, result={"files": 5}, counts={"cases": 5}, errors=[])
    page.wait_for_selector("[data-job][data-status=succeeded] a.job-result")
    assert "100 %" in page.inner_text("[data-job]")

    # When they start a rules label run.
    page.goto(f"{live_server.url}/console/lungs/labels/")
    tab_through(page)
    page.select_option("#id_labeler", "rules")
    page.click("text=Start report label run")
    page.wait_for_selector(".messages")
    run = LabelRun.objects.get(project=project)
    assert f"Label run {run.pk} (rules) started" in messages(page)
    assert run.status == "succeeded" and run.proposals >= 1
    assert "1 of 1" in page.inner_text("table")
    progress_text_agrees(page)
    shot(page, "labels")

    # And pre-annotate the CT with the lungs generator (no weights needed).
    page.click("nav.tools >> text=Pre-annotation")
    tab_through(page)
    page.select_option("#id_generator", "lungs")
    page.click("text=Start pre-annotation")
    page.wait_for_url("**/console/lungs/jobs/*/")
    page.wait_for_selector("[data-job][data-status=succeeded]")
    shot(page, "preannotate-job")

    # And make tasks from the proposals: the nodule becomes a finding with a review task.
    page.click("nav.tools >> text=Tasks from proposals")
    assert "1 waiting" in page.inner_text("main")
    tab_through(page)
    page.click("text=Create findings and review tasks")
    page.wait_for_selector(".messages")
    assert "1 finding with review tasks created" in messages(page)
    assert "0 waiting" in page.inner_text("main")
    finding = Finding.objects.get(project=project)
    assert finding.code and finding.task.stage == "annotate"
    shot(page, "tasks")

    # Then the queue shows who has what: the annotator takes the task and holds it.
    page.click("nav.tools >> text=Queue status")
    assert page.inner_text("tr[data-person=reader]").split("\t")[2:4] == ["1", "0"]
    task_next(project=project, user=reader, stages=("annotate",))
    page.reload()
    assert page.inner_text("tr[data-person=reader]").split("\t")[2:4] == ["0", "1"]
    tab_through(page)
    shot(page, "queue")

    # When they make a dataset, freeze a release of the weak labels and export it.
    page.click("nav.tools >> text=Releases and exports")
    page.fill("#id_ds_slug", "lungs-ct")
    page.fill("#id_ds_licence", "CC-BY-4.0")
    page.click("text=Create dataset")
    page.wait_for_selector("text=Dataset lungs-ct created.")
    page.check("#st-lungs-ct-open")
    page.select_option("#src-lungs-ct", "weak")
    page.fill("#notes-lungs-ct", "first look")
    page.click("text=Freeze version of lungs-ct")
    page.wait_for_selector("text=Release lungs-ct v1 is being frozen")
    release = DatasetRelease.objects.get(dataset__slug="lungs-ct")
    assert release.status == "frozen", release.error
    page.select_option(f"#fmt-{release.pk}", "monai")
    page.click("text=Export v1")
    page.wait_for_selector("li[data-export] [data-job][data-status=succeeded]")
    export = ReleaseExport.objects.get(release=release)
    assert export.status == "succeeded", export.error
    progress_text_agrees(page)
    tab_through(page)
    shot(page, "releases")

    # Then the export downloads as one zip holding the images, the data list and the card.
    with page.expect_download() as download:
        page.click("text=Download monai")
    data = Path(download.value.path()).read_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert any(n.endswith("dataset.json") for n in names) and any(n.endswith("README.md") for n in names)
    assert any(n.endswith(".nii.gz") for n in names), names[:10]

    # The remaining pages pass the keyboard walk too.
    for path in ("members/", "jobs/"):
        page.goto(f"{live_server.url}/console/lungs/{path}")
        tab_through(page)
    shot(page, "jobs")
    page.goto(f"{live_server.url}/console/lungs/members/")
    for _ in range(40):  # from the keyboard, to the "add a person" field: its focus ring is visible
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "id_username":
            break
    assert page.evaluate("() => document.activeElement.matches(':focus-visible')")
    shot(page, "members-focus")
    page.goto(f"{live_server.url}/console/lungs/")
    assert "1 open" in page.inner_text("main")
    shot(page, "overview-after")
    assert errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_errors_are_shown_as_messages_naming_the_field(chromium, live_server, lungs):
    page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{live_server.url}/console/lungs/members/")
    assert "/review/login/" in page.url
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/lungs/members/")
    page.fill("#id_username", "nobody")
    page.click("text=Add to lungs")
    alert = page.wait_for_selector(".messages [role=alert]")
    assert alert.inner_text().startswith("Error: username: no active user is named 'nobody'")
    page.click("nav.tools >> text=Uploads")
    page.click("text=Upload and ingest")
    alert = page.wait_for_selector(".messages [role=alert]")
    assert "files: Send at least one file" in alert.inner_text()
    shot(page, "error-message")

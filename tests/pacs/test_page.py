"""The managers' PACS page in Chromium against a live server and a real Orthanc: a source registered from
the form (checked, saved), a search by accession, the study picked and imported, the import followed to
its end with its counts in the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.models import Role
from core.services import membership_set, user_create
from pacs.models import PacsSource
from studies.models import Scan
from tests.conftest import REPO, need_service
from tests.pacs.conftest import ACCESSION
from tests.pacs.orthanc import PASSWORD, USER

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOGIN_PASSWORD = "pw-" + "x" * 12


@pytest.fixture
def chromium(monkeypatch):
    if not CHROMIUM.exists():
        need_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "pip install -r requirements-dev.txt")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.mark.django_db(transaction=True)
def test_a_manager_adds_a_source_finds_the_ct_and_imports_it_on_the_page(
    chromium, live_server, project, orthanc, ct_in_orthanc
):
    boss = user_create(username="boss", password=LOGIN_PASSWORD)
    membership_set(project=project, user=boss, role=Role.MANAGER)
    page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(120_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/pacs/{project.slug}/")
    assert "/review/login/" in page.url
    page.fill("#id_username", "boss")
    page.fill("#id_password", LOGIN_PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/pacs/{project.slug}/")
    page.wait_for_selector("#pacs[data-state=ready]")

    page.click("#add-source summary")
    page.fill("#source-form input[name=name]", "hospital")
    page.fill("#source-form input[name=base_url]", orthanc.dicomweb)
    page.select_option("#source-form select[name=auth]", "basic")
    page.fill("#source-form input[name=username]", USER)
    page.fill("#source-form input[name=password]", PASSWORD)
    page.click("#source-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#message').className === 'ok'")
    assert "answers and is saved" in page.inner_text("#message")
    assert PacsSource.objects.filter(project=project, name="hospital").exists()
    assert PASSWORD not in page.content()

    page.fill("#search-form input[name=accession]", ACCESSION)
    page.fill("#search-form input[name=modality]", "CT")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#studies tbody tr")
    assert "Lung_Dx-A0002" in page.inner_text("#studies tbody")
    page.check("#pick-all")
    assert page.inner_text("#import") == "Import 1 picked study"
    page.click("#import")
    page.wait_for_selector("#pacs[data-import-status=succeeded]")
    row = page.inner_text("#imports tbody tr")
    assert "succeeded" in row and "\t1\t" in row  # one series stored
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "test-artifacts" / "pacs-page.png"), full_page=True)
    assert Scan.objects.filter(project=project).count() == 1
    assert errors == []

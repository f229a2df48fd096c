"""Every console page per role: managers see it, every other member and outsiders get 404, anonymous
callers the login page; the project list and the home page link managers to their projects."""

import pytest
from django.urls import reverse

from core.models import Role
from core.services import membership_set

PAGES = [
    ("console-project", "Data and labels"),
    ("console-members", "Members and roles"),
    ("console-uploads", "Upload jobs"),
    ("console-jobs", "Background jobs of alpha"),
    ("console-labels", "Report labels"),
    ("console-preannotate", "Pre-annotation jobs"),
    ("console-tasks", "Tasks from proposals"),
    ("console-queue", "Queue status"),
    ("console-releases", "New dataset"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "heading"), PAGES)
def test_a_manager_sees_each_page_and_nobody_else_does(people, browser_for, project, name, heading):
    url = reverse(name, args=[project.slug])
    page = browser_for(people["manager"]).get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert heading in html
    # landmarks and headings for screen readers, the skip link, the project's tool navigation
    for part in ('<main id="main"', '<nav aria-label="Site">', 'aria-labelledby="tools-heading"', "<h1>"):
        assert part in html, part
    assert 'href="#main"' in html
    for role in ("annotator", "radiologist", "researcher", "outsider"):
        assert browser_for(people[role]).get(url).status_code == 404, role
    from django.test import Client

    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/review/login/?next=")


@pytest.mark.django_db
def test_the_current_tool_is_marked_for_screen_readers(people, browser_for, project):
    html = browser_for(people["manager"]).get(reverse("console-queue", args=[project.slug])).content.decode()
    assert f'<a href="/console/{project.slug}/queue/" aria-current="page">Queue status</a>' in html


@pytest.mark.django_db
def test_the_project_list_links_managers_to_the_console_and_others_to_the_review_screen(
    people, browser_for, project, other_project
):
    manager = browser_for(people["manager"]).get(reverse("console-projects")).content.decode()
    assert f'href="/console/{project.slug}/"' in manager
    assert other_project.slug not in manager  # not theirs
    annotator = browser_for(people["annotator"]).get(reverse("console-projects")).content.decode()
    assert f'href="/console/{project.slug}/"' not in annotator
    assert f'href="/review/{project.slug}/"' in annotator
    researcher = browser_for(people["researcher"]).get(reverse("console-projects")).content.decode()
    assert "API only" in researcher


@pytest.mark.django_db
def test_home_links_managers_to_the_console(people, browser_for, project):
    home = browser_for(people["manager"]).get("/").content.decode()
    assert 'href="/console/"' in home and f'href="/console/{project.slug}/"' in home
    annotator = browser_for(people["annotator"]).get("/").content.decode()
    assert 'href="/console/"' not in annotator and f'href="/review/{project.slug}/"' in annotator


@pytest.mark.django_db
def test_other_apps_add_tools_to_the_overview_through_the_registry(people, browser_for, project):
    from console import tools

    tools.register(tools.ProjectTool(key="extra", label="Extra tool", url_name="console-queue", order=1))
    tools.register(tools.ProjectTool(key="gone", label="Switched off", url_name="no-such-route"))
    try:
        html = browser_for(people["manager"]).get(reverse("console-project", args=[project.slug])).content
        html = html.decode()
        assert f'<li data-tool="extra"><a href="/console/{project.slug}/queue/">Extra tool</a>' in html
        assert "Switched off" not in html  # a route that is not there is left out, not an error
    finally:
        tools._TOOLS.pop("extra")
        tools._TOOLS.pop("gone")


@pytest.mark.django_db
def test_forms_need_the_csrf_token(people, project):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(people["manager"])
    response = client.post(reverse("console-tasks", args=[project.slug]))
    assert response.status_code == 403


@pytest.mark.django_db
def test_objects_of_another_project_are_not_found_through_this_one(
    people, browser_for, project, other_project, make_user
):
    from core.jobs import job_create
    from releases.services import dataset_create

    client = browser_for(people["manager"])
    membership_set(project=other_project, user=people["manager"], role=Role.MANAGER)  # theirs too
    theirs = job_create(project=other_project, kind="x")
    assert client.get(reverse("console-job", args=[project.slug, theirs.pk])).status_code == 404
    assert client.get(reverse("console-job", args=[other_project.slug, theirs.pk])).status_code == 200
    dataset_create(slug="beta-only", name="B", projects=[other_project])
    url = reverse("console-release-create", args=[project.slug, "beta-only"])
    assert client.post(url, {"sources": "weak"}).status_code == 404
    # and the outsider, a manager of beta only, meets nothing of alpha's
    outsider = browser_for(people["outsider"])
    mine = job_create(project=project, kind="x")
    assert outsider.get(reverse("console-job", args=[other_project.slug, mine.pk])).status_code == 404


@pytest.mark.django_db
def test_an_unexpected_error_is_a_message_with_an_incident_never_a_traceback(
    people, browser_for, project, monkeypatch, caplog
):
    from console.views import review

    def broken(user, project):
        raise RuntimeError("cannot open /srv/groundlab/secret/queue.db")

    monkeypatch.setattr(review, "queue_status", broken)
    response = browser_for(people["manager"]).get(reverse("console-queue", args=[project.slug]))
    assert response.status_code == 500
    html = response.content.decode()
    assert "RuntimeError: cannot open &lt;path&gt;" in html and "incident" in html
    assert "/srv/groundlab" not in html and "Traceback" not in html
    assert "Traceback" in caplog.text and "/srv/groundlab/secret/queue.db" in caplog.text


@pytest.mark.django_db
def test_the_pacs_page_is_one_of_the_projects_tools(people, browser_for, project):
    """The pacs app registers its page from its AppConfig: the overview links to it."""
    page = browser_for(people["manager"]).get(reverse("console-project", args=[project.slug]))
    html = page.content.decode()
    assert f'<li data-tool="pacs"><a href="/pacs/{project.slug}/">' in html

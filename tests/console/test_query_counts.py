"""The console's list pages read a fixed number of queries whatever the number of rows (jobs, runs,
releases and exports, members, tasks)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.services import task_next
from core.jobs import job_create
from core.models import Project, Role
from core.services import membership_set
from labeling.models import LabelRun
from releases.services import dataset_create, export_start, release_start


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def _grows(client, url, add) -> tuple[int, int]:
    """Queries of ``url`` with some rows (``add`` once), then with more (``add`` twice more)."""
    add()
    before = _queries(client, url)
    add()
    add()
    return before, _queries(client, url)


@pytest.mark.django_db
def test_jobs_uploads_and_preannotation_lists(people, browser_for, project):
    client = browser_for(people["manager"])

    def jobs(kind):
        return lambda: [job_create(project=project, kind=kind, user=people["manager"]) for _ in range(5)]

    for name, kind in (
        ("console-jobs", "x"),
        ("console-uploads", "ingest_upload"),
        ("console-preannotate", "preannotate"),
    ):
        before, after = _grows(client, reverse(name, args=[project.slug]), jobs(kind))
        assert before == after, (name, before, after)


@pytest.mark.django_db
def test_label_runs_members_and_project_lists(people, browser_for, project, make_user):
    client = browser_for(people["manager"])

    def runs():
        for n in range(4):
            run = LabelRun.objects.create(
                project=project, labeler="rules", settings_hash=f"h{LabelRun.objects.count()}-{n}"
            )
            run.job = job_create(project=project, kind="label_run")
            run.save(update_fields=["job"])

    before, after = _grows(client, reverse("console-labels", args=[project.slug]), runs)
    assert before == after

    def members():
        for _ in range(3):
            membership_set(project=project, user=make_user(), role=Role.ANNOTATOR)

    before, after = _grows(client, reverse("console-members", args=[project.slug]), members)
    assert before == after
    before, after = _grows(client, reverse("console-queue", args=[project.slug]), members)
    assert before == after

    def projects():
        from core.services import project_create

        for _ in range(3):
            project_create(slug=f"p{Project.objects.count()}", owner=people["manager"])

    before, after = _grows(client, reverse("console-projects"), projects)
    assert before == after


@pytest.mark.django_db
def test_queue_and_overview_with_more_tasks(people, browser_for, ct_case, tmp_path):
    from labeling.services import label_run_execute, label_run_get_or_create
    from studies.models import Report

    project = ct_case.project
    client = browser_for(people["manager"])
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    from annotation.services import findings_made

    findings_made(project=project)

    def more():
        Report.objects.create(
            project=project, study=ct_case.study, external_id="r2", source="text", raw_text="x", checksum="2",
            findings="Small left pleural effusion. Mild emphysema.",
        )  # fmt: skip
        label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
        findings_made(project=project)
        task_next(project=project, user=people["annotator"], stages=("annotate",))

    queue = reverse("console-queue", args=[project.slug])
    overview = reverse("console-project", args=[project.slug])
    tasks = reverse("console-tasks", args=[project.slug])  # every task linked into the review screen
    q0, o0, t0 = _queries(client, queue), _queries(client, overview), _queries(client, tasks)
    more()
    assert (_queries(client, queue), _queries(client, overview), _queries(client, tasks)) == (q0, o0, t0)


@pytest.mark.django_db(transaction=True)
def test_releases_list_with_more_releases_and_exports(people, browser_for, ct_case):
    from labeling.services import label_run_execute, label_run_get_or_create

    project = ct_case.project
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    client = browser_for(people["manager"])
    dataset = dataset_create(slug="lungs", name="Lungs", projects=[project], user=people["manager"])
    url = reverse("console-releases", args=[project.slug])

    def release():
        made = release_start(dataset=dataset, selection={"sources": "weak", "statuses": ["open"]})
        made.refresh_from_db()
        assert made.status == "frozen", made.error
        export_start(release=made, fmt_name="monai")

    before, after = _grows(client, url, release)
    assert before == after
    assert client.get(url).content.decode().count("Download monai") == 3

"""What a manager does on the console's forms, through the same services as the API: each change is
checked in the database, and each refusal is a message naming the field."""

import io
from pathlib import Path

import pytest
from django.urls import reverse
from pydicom.data import get_testdata_file

from annotation.models import Finding, ReviewTask
from core.models import Job, Membership, Role
from labeling.models import GazeLabelRun, LabelRun
from releases.models import Dataset, DatasetRelease, ReleaseExport
from studies.models import Scan


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


_capture = None  # django_capture_on_commit_callbacks, set per test: jobs are sent once the request commits


@pytest.fixture(autouse=True)
def _jobs_run(django_capture_on_commit_callbacks):
    global _capture
    _capture = django_capture_on_commit_callbacks
    yield
    _capture = None


def _post(client, name, slug, data=None, *args, **kwargs):
    """POST a form and follow the redirect; jobs it sent run (in-process) when its transaction commits."""
    with _capture(execute=True):
        sent = client.post(reverse(name, args=[slug, *args]), data or {}, **kwargs)
    assert sent.status_code == 302, sent.status_code
    page = client.get(sent["Location"])
    page.redirect_chain = [(sent["Location"], 302)]
    return page


@pytest.mark.django_db
def test_members_are_added_changed_and_removed(people, browser_for, project, make_user):
    client = browser_for(people["manager"])
    newcomer = make_user("newcomer")
    done = _post(client, "console-members", project.slug, {"username": "newcomer", "role": "annotator"})
    assert "newcomer was added as annotator of alpha." in _messages(done)
    assert Membership.objects.get(project=project, user=newcomer).role == Role.ANNOTATOR
    done = _post(client, "console-members", project.slug, {"username": "newcomer", "role": "radiologist"})
    assert "newcomer is now radiologist of alpha." in _messages(done)
    assert Membership.objects.get(project=project, user=newcomer).role == Role.RADIOLOGIST
    done = _post(client, "console-member-remove", project.slug, {}, newcomer.pk)
    assert "newcomer was removed from alpha." in _messages(done)
    assert not Membership.objects.filter(project=project, user=newcomer).exists()
    assert done.status_code == 200 and "newcomer" not in done.content.decode().split("<tbody>")[1]


@pytest.mark.django_db
def test_member_errors_name_the_field(people, browser_for, project, other_project):
    client = browser_for(people["manager"])
    bad = _post(client, "console-members", project.slug, {"username": "nobody", "role": "annotator"})
    assert _messages(bad) == [
        "username: no active user is named 'nobody' (an administrator creates accounts)"
    ]
    assert 'role="alert"' in bad.content.decode()
    bad = _post(client, "console-members", project.slug, {"username": "annotator", "role": "boss"})
    assert _messages(bad) == ["role: choose one of manager, annotator, radiologist, researcher"]
    # the last manager can be neither demoted nor removed
    bad = _post(client, "console-members", project.slug, {"username": "manager", "role": "annotator"})
    assert _messages(bad) == ["user: manager is the project's only manager and cannot be made annotator"]
    bad = _post(client, "console-member-remove", project.slug, {}, people["manager"].pk)
    assert _messages(bad) == ["user: manager is the project's only manager and cannot be removed"]
    assert Membership.objects.get(project=project, user=people["manager"]).role == Role.MANAGER
    # a member of another project is not removed through this one
    bad = _post(client, "console-member-remove", project.slug, {}, people["outsider"].pk)
    assert _messages(bad) == [f"user: user {people['outsider'].pk} is not a member of alpha"]
    assert Membership.objects.filter(project=other_project, user=people["outsider"]).exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_is_ingested_and_its_job_page_shows_it_finished(people, browser_for, project):
    client = browser_for(people["manager"])
    path = Path(get_testdata_file("CT_small.dcm"))
    with open(path, "rb") as fh:
        done = _post(client, "console-uploads", project.slug, {"files": [fh], "modality": ""})
    job = Job.objects.get(project=project, kind="ingest_upload")
    assert done.redirect_chain[-1][0] == reverse("console-job", args=[project.slug, job.pk])
    assert "Upload of 1 file received" in _messages(done)[0]
    html = done.content.decode()
    assert job.status == "succeeded" and Scan.objects.filter(project=project).count() == 1
    assert f'data-job="{job.pk}" data-status="succeeded"' in html
    assert '<progress max="100" value="100"' in html and "100 %" in html  # the number, not just a colour
    assert "succeeded</span>" in html


@pytest.mark.django_db
def test_an_upload_without_files_or_of_a_bad_file_says_which(people, browser_for, project):
    client = browser_for(people["manager"])
    empty = _post(client, "console-uploads", project.slug, {})
    assert _messages(empty) == ["files: Send at least one file in 'files', 'reports' or 'gaze'."]
    assert not Job.objects.filter(project=project).exists()
    junk = io.BytesIO(b"DICM" * 10)
    junk.name = "junk.dcm"
    done = _post(client, "console-uploads", project.slug, {"files": [junk]})
    job = Job.objects.get(project=project)
    html = done.content.decode()
    assert job.errors and "junk.dcm" in html  # the job page lists the file and its reason
    assert "Traceback" not in html


@pytest.mark.django_db
def test_label_runs_start_with_the_rules_labeler_and_bad_settings_are_named(people, browser_for, ct_case):
    project = ct_case.project
    client = browser_for(people["manager"])
    done = _post(client, "console-label-run-start", project.slug, {"labeler": "rules"})
    run = LabelRun.objects.get(project=project)
    assert _messages(done) == [f"Label run {run.pk} (rules) started: job {run.job_id}."]
    assert run.status == "succeeded" and run.proposals >= 1
    assert f"Run {run.pk}" in done.content.decode()
    bad = _post(client, "console-label-run-start", project.slug, {"labeler": "rules", "params": "{oops"})
    assert _messages(bad)[0].startswith("params: not JSON")
    bad = _post(client, "console-label-run-start", project.slug, {"labeler": "magic"})
    assert _messages(bad) == ['labeler: "magic" is not a valid choice.']
    bad = _post(client, "console-label-run-start", project.slug, {"labeler": "llm", "endpoint": "nowhere"})
    assert _messages(bad)[0].startswith("params.endpoint: no LLM endpoint 'nowhere' is configured")
    assert LabelRun.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_gaze_runs_start_and_an_unknown_preset_is_named(people, browser_for, project):
    client = browser_for(people["manager"])
    done = _post(client, "console-gaze-run-start", project.slug, {"preset": "fgcxr", "lead_s": "1.5"})
    run = GazeLabelRun.objects.get(project=project)
    assert run.params["preset"] == "fgcxr" and run.params["lead_s"] == 1.5
    assert _messages(done) == [f"Gaze label run {run.pk} started: job {run.job_id}."]
    bad = _post(client, "console-gaze-run-start", project.slug, {"preset": "nope"})
    assert _messages(bad)[0].startswith("preset: unknown preset 'nope'")
    bad = _post(client, "console-gaze-run-start", project.slug, {"lead_s": "soon"})
    assert _messages(bad) == ["lead_s: a number of seconds, got 'soon'"]


@pytest.mark.django_db
def test_pre_annotation_runs_a_generator_on_a_scan(people, browser_for, ct_case):
    project = ct_case.project
    client = browser_for(people["manager"])
    page = client.get(reverse("console-preannotate", args=[project.slug])).content.decode()
    assert f'<option value="{ct_case.pk}">' in page and '<option value="lungs">' in page
    done = _post(client, "console-preannotate", project.slug, {"scan": ct_case.pk, "generator": "lungs"})
    job = Job.objects.get(project=project, kind="preannotate")
    assert job.status == "succeeded", job.errors
    assert done.redirect_chain[-1][0] == reverse("console-job", args=[project.slug, job.pk])
    bad = _post(client, "console-preannotate", project.slug, {"scan": ct_case.pk, "generator": "model:none"})
    assert _messages(bad) == ["generator: choose one of lungs, pet-suv, gaze"]
    bad = _post(client, "console-preannotate", project.slug, {"scan": "", "generator": "lungs"})
    assert _messages(bad) == ["scan: choose a scan"]


@pytest.mark.django_db
def test_tasks_from_proposals_and_the_queue_per_person(people, browser_for, ct_case):
    from annotation.services import task_next, task_submit
    from labeling.services import label_run_execute, label_run_get_or_create

    project = ct_case.project
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    client = browser_for(people["manager"])
    page = client.get(reverse("console-tasks", args=[project.slug])).content.decode()
    assert "<strong>1 waiting</strong>" in page
    done = _post(client, "console-tasks", project.slug)
    assert _messages(done)[0].startswith("1 finding with review tasks created")
    assert Finding.objects.filter(project=project).count() == 1
    assert "<strong>0 waiting</strong>" in done.content.decode()
    again = _post(client, "console-tasks", project.slug)
    assert _messages(again)[0].startswith("0 findings")  # nothing twice

    queue = client.get(reverse("console-queue", args=[project.slug])).content.decode()
    assert (
        '<tr data-person="annotator"><th scope="row">annotator</th><td>annotator</td><td>1</td><td>0</td>'
        in queue
    )
    # the manager gives the task to the annotator; a researcher takes no tasks
    task_id = ReviewTask.objects.get(project=project).pk
    given = _post(client, "console-task-assign", project.slug, {"user": "annotator"}, task_id)
    assert _messages(given) == [f"Task {task_id} is now annotator's."]
    assert ReviewTask.objects.get(pk=task_id).assignee == people["annotator"]
    assert "annotator (assigned, not opened)" in given.content.decode()
    assert '<th scope="row">annotate</th><td>0</td><td>1</td>' in given.content.decode()  # held for them
    refused = _post(client, "console-task-assign", project.slug, {"user": "researcher"}, task_id)
    assert _messages(refused) == ["user: 'researcher' is not an annotator or radiologist of this project"]
    task = task_next(project=project, user=people["annotator"], stages=("annotate",))
    queue = client.get(reverse("console-queue", args=[project.slug])).content.decode()
    assert '<th scope="row">annotate</th><td>0</td><td>1</td>' in queue
    assert '<th scope="row">annotator</th><td>annotator</td><td>0</td><td>1</td><td>0</td>' in queue
    task_submit(task_id=task.pk, user=people["annotator"], decision="reject")
    queue = client.get(reverse("console-queue", args=[project.slug])).content.decode()
    assert '<th scope="row">annotator</th><td>annotator</td><td>0</td><td>0</td><td>1</td><td>0</td>' in queue
    assert '<th scope="row">radiologist</th><td>radiologist</td><td>1</td>' in queue  # now in review
    assert ReviewTask.objects.get(pk=task.pk).stage == "review"


@pytest.mark.django_db
def test_a_release_is_frozen_exported_and_downloadable(people, browser_for, ct_case):
    from labeling.services import label_run_execute, label_run_get_or_create

    project = ct_case.project
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    client = browser_for(people["manager"])
    done = _post(client, "console-dataset-create", project.slug, {"slug": "lungs", "licence": "CC-BY-4.0"})
    assert _messages(done) == ["Dataset lungs created."]
    assert list(Dataset.objects.get(slug="lungs").projects.all()) == [project]
    again = _post(client, "console-dataset-create", project.slug, {"slug": "lungs"})
    assert _messages(again) == ["slug: a dataset 'lungs' exists already"]
    bad = _post(client, "console-dataset-create", project.slug, {"slug": "no spaces"})
    assert _messages(bad)[0].startswith("slug: ")
    # human-reviewed labels: none yet, so nothing to release; weak labels: the report's proposals
    none = _post(client, "console-release-create", project.slug, {"sources": "human"}, "lungs")
    assert _messages(none)[0].startswith("selection: no labels to release")
    done = _post(
        client, "console-release-create", project.slug,
        {"sources": "weak", "statuses": ["accepted", "open"], "seed": "3", "notes": "first"}, "lungs",
    )  # fmt: skip
    release = DatasetRelease.objects.get(dataset__slug="lungs")
    assert release.status == "frozen", release.error
    assert release.selection["seed"] == 3
    assert _messages(done) == [f"Release lungs v1 is being frozen: job {release.job_id}."]
    done = _post(client, "console-export-create", project.slug, {"format": "monai"}, release.pk)
    export = ReleaseExport.objects.get(release=release)
    assert export.status == "succeeded", export.error
    html = done.content.decode()
    assert f'href="/api/release-exports/{export.pk}/archive/"' in html
    archive = client.get(f"/api/release-exports/{export.pk}/archive/")
    assert archive.status_code == 200 and b"".join(archive.streaming_content)[:2] == b"PK"
    bad = _post(client, "console-export-create", project.slug, {"format": "tiff"}, release.pk)
    assert _messages(bad)[0].startswith("format: unknown format 'tiff'")

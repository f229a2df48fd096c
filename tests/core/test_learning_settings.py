"""The learning loop's project settings (issue 16): ``findings_after_label_run`` and ``train_after_accepted``
are set by managers over the API and by the CLI, refused out of range, and shown with the project."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import FieldError
from core.models import Project, Role
from core.services import membership_set, project_review_settings


def test_learning_settings_over_the_api_the_service_and_the_cli(project, make_user, api_client):
    manager, annotator = make_user("m"), make_user("a")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    url = f"/api/projects/{project.slug}/"
    shown = api_client(annotator).get(url).json()
    assert (shown["findings_after_label_run"], shown["train_after_accepted"]) == (False, 0)
    body = {"findings_after_label_run": True, "train_after_accepted": 25}
    assert api_client(annotator).patch(url, body, format="json").status_code == 403
    bad = api_client(manager).patch(url, {"train_after_accepted": -1}, format="json")
    assert bad.status_code == 400 and "train_after_accepted" in bad.json()
    done = api_client(manager).patch(url, body, format="json")
    assert done.status_code == 200 and done.json()["train_after_accepted"] == 25
    project.refresh_from_db()
    assert (project.findings_after_label_run, project.train_after_accepted) == (True, 25)

    with pytest.raises(FieldError, match="^train_after_accepted: a count"):
        project_review_settings(project=project, train_after_accepted=True)
    with pytest.raises(FieldError, match="^findings_after_label_run: true or false"):
        project_review_settings(project=project, findings_after_label_run="yes")

    call_command("project_create", "loop", "--findings-after-label-run", "--train-after-accepted", "10")
    made = Project.objects.get(slug="loop")
    assert (made.findings_after_label_run, made.train_after_accepted) == (True, 10)
    call_command("project_create", "plain")
    plain = Project.objects.get(slug="plain")
    assert (plain.findings_after_label_run, plain.train_after_accepted) == (False, 0)
    with pytest.raises(CommandError, match="--train-after-accepted"):
        call_command("project_create", "bad", "--train-after-accepted", "-3")
    assert not Project.objects.filter(slug="bad").exists()

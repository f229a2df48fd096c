"""The Django admin lists and opens every model."""

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import make_scan_tree

pytestmark = pytest.mark.django_db


def test_admin_changelists_and_change_pages(client, make_user, project):
    tree = make_scan_tree(project)
    superuser = make_user("root", is_superuser=True)
    client.force_login(superuser)
    models = [m for m in admin.site._registry if m._meta.app_label in {"core", "studies"}]
    assert len(models) == 11
    for model in models:
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url
    for obj in (tree["scan"], tree["report"], tree["gaze"], tree["study"], project):
        meta = obj._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
        assert client.get(url).status_code == 200, url

"""Reads of model versions and training runs: members of the project see them (others: 404)."""

from __future__ import annotations

from django.db.models import QuerySet

from core.errors import NotFound
from core.selectors import projects_for_user
from ml.models import ModelVersion, TrainingRun


def model_versions_for_user(user) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project__in=projects_for_user(user))


def model_version_get_for_user(user, version_id: int) -> ModelVersion:
    found = model_versions_for_user(user).filter(pk=version_id).first()
    if found is None:
        raise NotFound("No such model version.")
    return found


def training_runs_for_user(user) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(project__in=projects_for_user(user))


def training_run_get_for_user(user, run_id: int) -> TrainingRun:
    found = training_runs_for_user(user).filter(pk=run_id).first()
    if found is None:
        raise NotFound("No such training run.")
    return found

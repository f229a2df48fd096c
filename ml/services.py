"""Model registry: register a model file as a new version, then validate it on a worker.

Registering checks what can be checked without torch (format, input spec, label names, network spec
shape), stores the file and creates the ``ModelVersion`` as ``validating``; a job on the ``gpu`` queue
(in-process where no broker is configured) loads it and runs a forward pass on a dummy input, and marks it
``ready`` or ``rejected`` with the reason naming the file and field. The web tier never loads a model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from core.jobs import job_create, job_dispatch
from core.models import Job, Project
from core.storage import project_key, sha256_file, storage_local_copy, storage_put_file
from ml.models import ModelFormat, ModelStatus, ModelTask, ModelVersion
from ml.specs import InputSpec, ModelError, check_label_names

log = logging.getLogger(__name__)


def _check(fmt: str, task: str, name: str, network: dict | None, file: str) -> None:
    if fmt not in ModelFormat.values:
        raise ModelError(file, "format", f"{fmt!r} is not one of {', '.join(ModelFormat.values)}")
    if task not in ModelTask.values:
        raise ModelError(file, "task", f"{task!r} is not one of {', '.join(ModelTask.values)}")
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise ModelError(file, "name", f"{name!r}: letters, digits, - and _ (at most 64)")
    if fmt == ModelFormat.STATE_DICT and not (isinstance(network, dict) and network.get("name")):
        raise ModelError(
            file, "network", 'a state dict needs {"name": <monai.networks.nets class>, "args": {...}}'
        )


def model_version_register(
    *,
    project: Project,
    path: Path,
    fmt: str,
    name: str,
    task: str = ModelTask.SEGMENTATION,
    input_spec: dict[str, Any],
    label_names: list[str],
    network: dict | None = None,
    parent: ModelVersion | None = None,
    metrics: dict | None = None,
    user=None,
    validate: bool = True,
) -> ModelVersion:
    """Store ``path`` (a file; a bundle folder is zipped) as the next version of ``name`` and start its
    validation. ``ModelError`` (file and field) for what is wrong before anything is stored."""
    path = Path(path)
    file = path.name
    if not path.exists():
        raise ModelError(file, "file", "no such file or folder")
    _check(fmt, task, name, network, file)
    spec = InputSpec.from_dict(input_spec or {}, file)
    names = check_label_names(label_names, file)
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        source = path
        if path.is_dir():
            source = Path(shutil.make_archive(str(Path(tmp) / path.name), "zip", root_dir=path))
        checksum = sha256_file(source)
        for _ in range(5):  # two registrations of one name at once: the unique constraint decides
            try:
                with transaction.atomic():
                    latest = ModelVersion.objects.filter(project=project, name=name).aggregate(
                        v=Max("version")
                    )
                    number = (latest["v"] or 0) + 1
                    key = project_key(project, "models", name, f"v{number}", source.name)
                    version = ModelVersion.objects.create(
                        project=project, name=name, version=number, task=task, format=fmt,
                        input_spec=spec.as_dict(), label_names=names, network=network or {},
                        weights=storage_put_file(key, source) if source != path else _copy_in(key, path),
                        checksum=checksum, metrics=metrics or {}, parent=parent, created_by=user,
                    )  # fmt: skip
                break
            except IntegrityError:
                continue
        else:
            raise ModelError(file, "name", f"could not number a new version of {name!r}; try again")
    if validate:
        model_version_start_validation(version=version, user=user)
    return version


def _copy_in(key: str, path: Path) -> str:
    """Store a copy (the caller keeps its file: ``storage_put_file`` moves local files)."""
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        return storage_put_file(key, copy)


def model_version_start_validation(*, version: ModelVersion, user=None) -> Job:
    from ml.tasks import validate_model

    with transaction.atomic():
        job = job_create(
            project=version.project, kind="model_validate", user=user, params={"model_version": version.pk}
        )
        ModelVersion.objects.filter(pk=version.pk).update(job=job, status=ModelStatus.VALIDATING, error="")
        job_dispatch(job=job, task=validate_model)
    return job


def model_version_validate(*, version: ModelVersion, device: str | None = None) -> ModelVersion:
    """Worker side: load the stored file and run the forward-pass check; ready or rejected."""
    from ml.engine.devices import pick_device
    from ml.engine.loading import check_forward, load_model

    file = Path(version.weights.name).name
    try:
        with storage_local_copy(version.weights.name) as local:
            model = load_model(local, version.format, network=version.network, device=device or pick_device())
        check_forward(model, InputSpec.from_dict(version.input_spec), version.label_names, file)
    except ModelError as exc:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.REJECTED, error=str(exc))
    else:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.READY, error="")
    version.refresh_from_db()
    return version


def model_validate_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    version = ModelVersion.objects.get(pk=job.params["model_version"])
    version = model_version_validate(version=version)
    errors = [{"file": Path(version.weights.name).name, "reason": version.error}] if version.error else []
    return {"model_version": version.pk, "status": version.status}, {}, errors


def model_version_latest(*, project: Project, name: str) -> ModelVersion:
    """The newest ready version of ``name``; ModelError when there is none."""
    version = (
        ModelVersion.objects.filter(project=project, name=name, status=ModelStatus.READY)
        .order_by("-version")
        .first()
    )
    if version is None:
        known = sorted(set(ModelVersion.objects.filter(project=project).values_list("name", flat=True)))
        raise ModelError(
            name, "model", f"no ready version of {name!r} in {project.slug} (models: {known or 'none'})"
        )
    return version

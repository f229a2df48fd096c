"""Model registry: register a model file as a new version, then validate it on a worker.

Registering (a manager's action) checks what can be checked without torch (format, input spec, label
names, a network spec's arguments and a bundle's ``network_def`` read as data by ``ml.bundle_config``),
stores the file and creates the ``ModelVersion`` as ``validating``; a job on the ``gpu`` queue (in-process
where no broker is configured) marks it ``ready`` or ``rejected`` with the reason naming the file and
field. The job loads the model and runs a forward pass on a dummy input in a child process
(``ml.engine.check``): model files, TorchScript above all, are never loaded in the job's own process, so
never in the web server's when jobs run in-process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

import ml
from core.jobs import job_create, job_dispatch
from core.models import Job, Project
from core.storage import project_key, sha256_file, storage_local_copy, storage_put_file
from ml.bundle_config import check_spec_args
from ml.bundle_pipeline import Bundle, bundle_read
from ml.models import ModelFormat, ModelStatus, ModelTask, ModelVersion
from ml.specs import CHECK_RESULT_PREFIX, InputSpec, ModelError, check_label_names

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 900  # loading and one forward pass on a dummy input; a file that hangs is rejected
# what the check's child process inherits of the environment: paths, locale, devices and thread counts;
# not the database, broker or storage credentials
CHILD_ENV_PREFIXES = ("PATH", "HOME", "LANG", "LC_", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH", "CUDA_",
                      "NVIDIA_", "ML_DEVICE", "OMP_", "MKL_", "TORCH", "PYTORCH_", "VIRTUAL_ENV")  # fmt: skip


def _check(fmt: str, task: str, name: str, network: dict | None, file: str, path: Path) -> Bundle | None:
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
    if network is not None:
        check_spec_args(network.get("args") if isinstance(network, dict) else None, file)
    if fmt == ModelFormat.BUNDLE:
        # data only: $ expressions (but the recognised idioms), foreign _target_, scripts/ refused here
        return bundle_read(path)
    return None


def bundle_specs(
    bundle: Bundle, input_spec: dict[str, Any] | None, label_names: list[str] | None
) -> tuple[dict[str, Any], list[str] | None]:
    """The input spec and label names of a bundle: what its ``configs/metadata.json`` and pipeline say
    (labels from ``outputs.pred.channel_def``; channels, modality and spatial shape from the inputs; roi
    from the inferer, spacing from ``Spacingd``, window from ``ScaleIntensityRanged``), with
    ``input_spec``/``label_names`` as overrides that must agree with them (``ModelError`` naming the field
    and both values when they do not)."""
    file = bundle.file
    meta, pipeline = bundle.metadata, bundle.pipeline
    derived: dict[str, Any] = {}
    if meta is not None:
        if meta.in_channels:
            derived["channels"] = meta.in_channels
        if meta.modality:
            derived["modality"] = [meta.modality]
        if meta.spatial_shape:
            derived["ndim"] = len(meta.spatial_shape)
            derived["roi_size"] = list(meta.spatial_shape)
    if pipeline is not None:
        roi = pipeline.inferer.args.get("roi_size")
        if isinstance(roi, list) and roi and all(isinstance(v, int) and v > 0 for v in roi):
            derived["roi_size"], derived["ndim"] = roi, len(roi)
        for t in pipeline.preprocessing:
            if t.name == "Spacingd" and isinstance(t.args.get("pixdim"), list):
                derived["spacing"] = [float(v) for v in t.args["pixdim"]]
            if t.name == "ScaleIntensityRanged" and {"a_min", "a_max"} <= set(t.args):
                derived["window"] = [float(t.args["a_min"]), float(t.args["a_max"])]
    given = dict(input_spec or {})
    for key, value in given.items():
        if key in derived and value is not None and _differs(value, derived[key]):
            raise ModelError(
                file, f"input_spec.{key}", f"{value!r} differs from the bundle's {derived[key]!r} "
                "(configs/metadata.json and the inference config); leave it out or give the same"
            )  # fmt: skip
    spec = {**derived, **given}
    names = [n.strip() for n in label_names] if label_names else None
    meta_labels = meta.labels if meta is not None else None
    if meta_labels is not None:
        if meta.out_channels is not None and meta.out_channels != len(meta_labels):
            raise ModelError(
                file, "label_names", f"configs/metadata.json: outputs.pred has {meta.out_channels} channels "
                f"but its channel_def names {len(meta_labels)}"
            )  # fmt: skip
        if names is not None and names != meta_labels:
            raise ModelError(
                file, "label_names", f"{names} differ from configs/metadata.json's channel_def "
                f"{meta_labels}; leave them out or give the same"
            )  # fmt: skip
        names = meta_labels
    if names is None:
        raise ModelError(
            file, "label_names", "give the label names: configs/metadata.json has no "
            "network_data_format.outputs.pred.channel_def"
        )  # fmt: skip
    return spec, names


def _differs(given: Any, derived: Any) -> bool:
    if isinstance(given, list) and isinstance(derived, list):
        return len(given) != len(derived) or any(_differs(a, b) for a, b in zip(given, derived, strict=True))
    if isinstance(given, (int, float)) and isinstance(derived, (int, float)):
        return abs(float(given) - float(derived)) > 1e-6
    return given != derived


def model_version_register(
    *,
    project: Project,
    path: Path,
    fmt: str,
    name: str,
    task: str = ModelTask.SEGMENTATION,
    input_spec: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
    network: dict | None = None,
    parent: ModelVersion | None = None,
    metrics: dict | None = None,
    user=None,
    validate: bool = True,
    text_encoder: Path | None = None,
) -> ModelVersion:
    """Store ``path`` (a file; a bundle folder is zipped) as the next version of ``name`` and start its
    validation. ``ModelError`` (file and field) for what is wrong before anything is stored. A MONAI
    bundle's input spec and label names come from its metadata and pipeline (``bundle_specs``);
    ``input_spec``/``label_names`` given for one must agree with them."""
    path = Path(path)
    file = path.name
    if not path.exists():
        raise ModelError(file, "file", "no such file or folder")
    bundle = _check(fmt, task, name, network, file, path)
    if bundle is not None and (bundle.metadata is not None or bundle.pipeline is not None):
        input_spec, label_names = bundle_specs(bundle, input_spec, label_names)
        network = {"bundle": bundle.summary()}  # what runs, for the model list; re-read from the file to run
    spec = InputSpec.from_dict(input_spec or {}, file)
    names = check_label_names(label_names, file)
    if text_encoder is not None:  # a grounding model's own sentence-transformers encoder (ml.encoders)
        network = _with_text_encoder(project, name, task, network, Path(text_encoder), file)
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


def _with_text_encoder(project, name: str, task: str, network, encoder: Path, file: str) -> dict:
    """The network spec with the user's text encoder checked and stored (``ml.encoders``)."""
    from ml.encoders import text_encoder_store

    if task != ModelTask.GROUNDING or not isinstance(network, dict):
        raise ModelError(
            file, "text_encoder", "only a grounding model (a state dict with a network spec) takes one"
        )
    text_dim = (network.get("args") or {}).get("text_dim", 384)
    stored = text_encoder_store(project=project, model_name=name, path=encoder, text_dim=text_dim)
    return {**network, "text_encoder": stored}


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


def model_version_validate(
    *, version: ModelVersion, device: str | None = None
) -> tuple[ModelVersion, dict[str, Any]]:
    """Worker side: the forward-pass check of the stored file in a child process; the version, now ready
    or rejected, and the check's answer (with the child's pid and device)."""
    file = Path(version.weights.name).name
    with storage_local_copy(version.weights.name) as local:
        outcome = model_check_in_child(
            path=local,
            fmt=version.format,
            network=version.network or None,
            input_spec=version.input_spec,
            label_names=version.label_names,
            device=device,
        )
    if outcome["ok"]:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.READY, error="")
    else:
        error = str(ModelError(outcome.get("file") or file, outcome["field"], outcome["reason"]))
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.REJECTED, error=error)
    version.refresh_from_db()
    return version, outcome


def model_check_in_child(
    *,
    path: Path,
    fmt: str,
    network: dict | None,
    input_spec: dict,
    label_names: list[str],
    device: str | None = None,
    timeout: float = CHECK_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``ml.engine.check`` on ``path`` in a new Python process (its own interpreter: nothing the file
    does when loaded or run reaches this process) with a trimmed environment; its JSON answer, or a
    rejection naming the file when the child crashes or runs past ``timeout`` seconds."""
    file = Path(path).name
    request = {
        "path": str(path),
        "format": fmt,
        "network": network,
        "input_spec": input_spec,
        "label_names": label_names,
        "device": device,
    }
    env = {k: v for k, v in os.environ.items() if k.startswith(CHILD_ENV_PREFIXES)}
    root = Path(ml.__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ml.engine.check"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "file": file,
            "field": "weights",
            "reason": f"the check ran past {timeout:.0f} s",
        }
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(CHECK_RESULT_PREFIX):
            return json.loads(line[len(CHECK_RESULT_PREFIX) :])
    log.error("model check of %s exited %s: %s", file, done.returncode, done.stderr[-4000:])
    return {
        "ok": False,
        "file": file,
        "field": "weights",
        "reason": f"loading or running the model crashed the check (exit status {done.returncode})",
    }


def model_validate_job(*, job: Job) -> tuple[dict, dict, list[dict]]:
    version = ModelVersion.objects.get(pk=job.params["model_version"])
    version, check = model_version_validate(version=version)
    errors = [{"file": Path(version.weights.name).name, "reason": version.error}] if version.error else []
    result = {"model_version": version.pk, "status": version.status, "checked_in_pid": check.get("pid")}
    return result, {}, errors


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

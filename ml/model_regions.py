"""Pre-annotation by a registered model (``model:<name>``): the regions of its newest ready version on a
scan, for ``ml.preannotate`` to store. torch and MONAI stay in ``ml/engine/``, imported when a model runs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.storage import storage_local_copy
from ml.regions import PreannotateError, Region, scan_volume
from ml.specs import ModelError
from studies.models import Scan


def model_regions(scan: Scan, name: str, params: dict, timings: dict) -> tuple[list[Region], Any, list[str]]:
    """Regions of the newest ready version of model ``name`` on ``scan``. A MONAI bundle with its own
    pipeline runs it (``ml.engine.bundle_run``: the bundle's preprocessing, inferer and postprocessing, as
    MONAI's bundle runner does); any other model runs by its input spec (``ml.engine.inference.predict``)
    on the scan reordered to RAS (``ml.engine.orientation``: what ``Orientationd("RAS")`` gives in
    training), the masks brought back to the stored grid. A grounding model's sentences share one
    preprocessed input of the scan (``ml.engine.inference.prepare``)."""
    from ml.services import model_version_latest

    version = model_version_latest(project=scan.project, name=name)
    spec = version.input_spec
    bundle_pipeline = version.format == "monai-bundle" and "pipeline" in (version.network or {}).get(
        "bundle", {}
    )
    if spec.get("modality") and scan.modality not in spec["modality"]:
        raise PreannotateError(
            "modality",
            f"model {name} v{version.version} takes {', '.join(spec['modality'])}, "
            f"the scan is {scan.modality}",
        )
    if int(spec.get("ndim", 3)) != scan.ndim and not bundle_pipeline:
        raise PreannotateError(
            "ndim", f"model {name} takes {spec.get('ndim')}D input, the scan is {scan.ndim}D"
        )
    from ml.engine.devices import pick_device
    from ml.engine.inference import predict, prepare
    from ml.engine.loading import load_model
    from ml.specs import InputSpec

    t = time.perf_counter()
    volume = scan_volume(scan)
    timings["read"] = time.perf_counter() - t
    device = params.get("device") or pick_device()
    if bundle_pipeline:
        return bundle_regions(scan, version, volume, device, params, timings)
    with storage_local_copy(version.weights.name) as local:
        model = load_model(local, version.format, network=version.network, device=device)
    spacing = [float(s) for s in scan.spacing]
    affine = np.asarray(scan.affine, dtype=np.float64)
    ornt = None
    if scan.ndim == 3:  # models see the scan reordered to RAS (Orientationd), the affine with it
        from ml.engine.orientation import from_ras, to_ras_with_affine

        volume, spacing, affine, ornt = to_ras_with_affine(volume, affine, spacing)
    kwargs = {"device": device, "sw_batch_size": int(params.get("sw_batch_size", 4)), "affine": affine}
    texts: list[tuple[str, str]] = [("", "")]  # (label, sentence); one pass without text
    if version.task == "grounding":
        texts = grounding_texts(scan, params)
        from ml.encoders import text_encoder_for  # the bundled MiniLM or the model's own encoder

        embeddings = text_encoder_for(version.network, device).encode([t for _, t in texts])
    regions, warnings = [], []
    input_spec = InputSpec.from_dict(spec)
    try:  # the scan's model input, made once and reused for each sentence
        prepared = prepare(model, volume, spacing, input_spec, affine)
    except ModelError as exc:
        raise PreannotateError("model", f"{exc}") from exc
    timings["model"], timings["preprocess_and_resample"] = 0.0, prepared.seconds
    for i, (label, text) in enumerate(texts):
        if text:
            kwargs["text_embedding"] = embeddings[i]
        try:
            prediction = predict(
                model, None, spacing, input_spec, version.label_names, prepared=prepared, **kwargs
            )
        except ModelError as exc:
            raise PreannotateError("model", f"{exc}") from exc
        timings["model"] += prediction.seconds_model
        timings["preprocess_and_resample"] += prediction.seconds_total - prediction.seconds_model
        warnings += prediction.warnings
        # one label map for all the labels, back on the stored grid from the RAS order the model saw
        label_map = from_ras(prediction.label_map, ornt) if ornt is not None else prediction.label_map
        regions += [
            Region(
                label=label or r.name,
                mask=None,
                label_map=label_map,
                value=r.value,
                code=label or r.name,
                text=text,
                confidence=r.confidence,
                entropy=r.entropy,
            )
            for r in prediction.labels
        ]
    return regions, version, warnings


def bundle_regions(
    scan: Scan, version, volume: np.ndarray, device: str, params: dict, timings: dict
) -> tuple[list[Region], Any, list[str]]:
    """A MONAI bundle run with its own pipeline (``ml.engine.bundle_run``), re-read from the stored file."""
    from ml.bundle_pipeline import bundle_read
    from ml.engine.bundle_run import bundle_predict
    from ml.engine.loading import load_model

    with storage_local_copy(version.weights.name) as local:
        bundle = bundle_read(local)
        model = load_model(local, version.format, device=device)
    if scan.ndim == 2:
        volume = volume[:, :, None]  # a radiograph as a one-slice volume, as MONAI loads a 2D NIfTI/PNG
    sw = params.get("sw_batch_size")
    try:
        prediction = bundle_predict(
            bundle, model, volume, np.asarray(scan.affine, dtype=np.float64), version.label_names,
            device=device, sw_batch_size=int(sw) if sw is not None else None,
        )  # fmt: skip
    except ModelError as exc:
        raise PreannotateError("model", f"{exc}") from exc
    timings["model"] = prediction.seconds_model
    timings["preprocess_and_resample"] = prediction.seconds_total - prediction.seconds_model
    label_map = prediction.label_map[:, :, 0] if scan.ndim == 2 else prediction.label_map
    regions = [
        Region(label=r.name, mask=None, label_map=label_map, value=r.value, code=r.name,
               confidence=r.confidence, entropy=r.entropy)
        for r in prediction.labels
    ]  # fmt: skip
    return regions, version, prediction.warnings


def grounding_texts(scan: Scan, params: dict) -> list[tuple[str, str]]:
    """(label, sentence) pairs a grounding model proposes a mask for: ``params["text"]`` (one sentence or a
    list), else the sentence of every present finding of the study's reports."""
    from labeling.models import FindingProposal

    given = params.get("text")
    if given:
        sentences = [given] if isinstance(given, str) else list(given)
        return [("finding", str(t)) for t in sentences]
    found = FindingProposal.objects.filter(
        project=scan.project, report__study=scan.study, assertion="present"
    )
    out, seen = [], set()
    for f in found.select_related("report").order_by("id"):
        sentence = (getattr(f.report, f.section, "") or "")[f.start : f.end] or f.phrase
        if (f.code, sentence) not in seen:
            seen.add((f.code, sentence))
            out.append((f.code, sentence))
    if not out:
        raise PreannotateError(
            "params",
            f"scan {scan.pk}'s study has no present finding to ground (label its reports), "
            "and no text was given",
        )
    return out

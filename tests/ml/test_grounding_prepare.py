"""A grounding model's scan is preprocessed once, not once per sentence: evaluation
(``ml.grounding_training.grounding_predictor``) and pre-annotation (``ml.model_regions``) make the model
input of a scan with ``ml.engine.inference.prepare`` and reuse it for each sentence,
with the same masks as before.

Real volumes (the toy CTs of ``tests/ml/grounding_toy.py``, ingested from DICOM), the real untrained
``TextConditionedUNet`` with position channels and the bundled MiniLM encoder, on the CPU. ``preprocess``
is counted by a wrapper that runs the real function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ml.engine.inference as inference
from tests.ml import grounding_toy
from tests.ml.grounding_toy import (
    INPUT_SPEC,
    LEFT_LOWER,
    PARENT_NETWORK,
    RIGHT_UPPER,
    toy_project,
    toy_volume,
)

offline_one_thread = grounding_toy.offline_one_thread  # autouse: the MiniLM offline, torch on one thread


@pytest.fixture
def preprocess_calls(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of the volumes ``ml.engine.inference.preprocess`` was called with (it still runs)."""
    calls: list[tuple[int, ...]] = []
    real = inference.preprocess

    def counted(volume, spacing, spec):
        calls.append(tuple(volume.shape))
        return real(volume, spacing, spec)

    monkeypatch.setattr(inference, "preprocess", counted)
    return calls


def test_a_prepared_input_gives_the_same_masks_as_preprocessing_per_sentence(preprocess_calls):
    from ml.engine.grounding import grounding_from_spec
    from ml.specs import InputSpec

    torch.manual_seed(0)
    net = grounding_from_spec(PARENT_NETWORK).eval()
    volume = toy_volume(np.random.default_rng(1)).transpose(2, 1, 0).astype(np.float32)  # (X, Y, Z)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    spec = InputSpec.from_dict(INPUT_SPEC)
    texts = [torch.randn(384, generator=torch.Generator().manual_seed(s)) for s in range(3)]

    each = [
        inference.predict(net, volume, [8.0] * 3, spec, ["finding"], text_embedding=t, affine=affine)
        for t in texts
    ]
    assert len(preprocess_calls) == 3  # the old way: once per sentence
    prepared = inference.prepare(net, volume, [8.0] * 3, spec, affine)
    assert prepared.x.shape == (1, 1 + 3, *volume.shape)  # image and the whole volume's position channels
    once = [
        inference.predict(net, None, [8.0] * 3, spec, ["finding"], text_embedding=t, prepared=prepared)
        for t in texts
    ]
    assert len(preprocess_calls) == 4  # prepare's one call, none per sentence
    for a, b in zip(each, once, strict=True):
        assert np.array_equal(a.label_map, b.label_map)
        assert [r.voxels for r in a.labels] == [r.voxels for r in b.labels]
    with pytest.raises(ValueError, match="volume or its prepared input"):
        inference.predict(net, None, [8.0] * 3, spec, ["finding"], text_embedding=texts[0])


@pytest.mark.django_db(transaction=True)
def test_evaluation_and_preannotation_preprocess_each_scan_once(tmp_path, make_user, preprocess_calls):
    from core.storage import storage_local_copy
    from ml.engine.loading import load_model
    from ml.grounding_training import grounding_predictor
    from ml.model_regions import model_regions
    from releases.evaluation import finding_cases

    toy = toy_project(
        tmp_path, make_user, patients=2, slug="prep", ratios={"train": 0.5, "val": 0.5, "test": 0}
    )
    version = toy.parent
    with storage_local_copy(version.weights.name) as local:
        model = load_model(local, version.format, network=version.network)
    cases = finding_cases(toy.project, toy.findings)
    assert len(cases) == 2 and all(len(c.findings) == 2 for c in cases)  # two sentences per scan

    preprocess_calls.clear()
    predict = grounding_predictor(model, version, device="cpu")
    for case in cases:
        masks = predict(case)
        assert len(masks) == 2
    assert len(preprocess_calls) == len(cases)  # once per scan (it was once per sentence: 4)

    preprocess_calls.clear()
    timings: dict = {}
    scan = toy.scans[0]
    regions, used, _ = model_regions(
        scan, "grounder", {"text": [RIGHT_UPPER, LEFT_LOWER], "device": "cpu"}, timings
    )
    assert used.pk == version.pk and len(preprocess_calls) == 1
    assert {r.text for r in regions} <= {RIGHT_UPPER, LEFT_LOWER}
    assert timings["preprocess_and_resample"] > 0 and timings["model"] > 0

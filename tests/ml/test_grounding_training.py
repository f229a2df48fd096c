"""Training a text-conditioned grounding model in the platform (issue 16 item 4): accepted (sentence, mask)
pairs of a project, whole-volume position channels, one mask per sentence, evaluated with the
ReXGroundingCT metrics on the release's validation split and stored on the new version.

Real database, real DICOM ingest and review services, real training on the CPU (a tiny TextConditionedUNet
and the bundled MiniLM sentence encoder), the real release of the real CT lungdx-a0002."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.models import ModelVersion
from tests.ml import grounding_toy
from tests.ml.grounding_toy import LEFT_LOWER, PARENT_NETWORK, RIGHT_UPPER, toy_project

pytestmark = pytest.mark.django_db(transaction=True)
PARAMS = {
    "steps": 200,
    "batch_size": 4,
    "learning_rate": 0.005,
    "checkpoint_every": 50,
    "foreground_fraction": 0.6,
}  # fmt: skip


offline_one_thread = grounding_toy.offline_one_thread  # autouse: the MiniLM offline, torch on one thread


def test_volume_position_is_ras_of_the_whole_volume_on_the_model_grid():
    from ml.engine.grounding import POSITION_SCALE_MM, volume_position

    # an LPS-like flip on x, 2 mm voxels, an origin far from the centre (table position)
    affine = np.array([[-2.0, 0, 0, 300.0], [0, 2.0, 0, -50.0], [0, 0, 3.0, 900.0], [0, 0, 0, 1]])
    pos = volume_position(affine, (10, 8, 6))
    assert pos.shape == (3, 10, 8, 6)
    # centre of the volume at 0 whatever the origin; x flips with the affine; mm over the scale
    assert torch.allclose(pos[:, 4:6, 3:5, 2:4].mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-6)
    assert pos[0, 0, 0, 0] == pytest.approx(-2.0 * (0 - 4.5) / POSITION_SCALE_MM)
    assert pos[2, 0, 0, 5] == pytest.approx(3.0 * (5 - 2.5) / POSITION_SCALE_MM)
    # on a resampled grid (half the voxels along x) the same world positions, at the new voxel centres
    half = volume_position(affine, (10, 8, 6), (5, 8, 6))
    assert half[0, 0, 0, 0] == pytest.approx(-2.0 * (0.5 - 4.5) / POSITION_SCALE_MM)
    # a window cut from the whole volume keeps its place (not the window's own coordinates)
    from ml.engine.grounding import with_position

    x = with_position(torch.zeros(1, 1, 10, 8, 6), affine, (10, 8, 6))
    assert x.shape == (1, 4, 10, 8, 6) and torch.equal(x[0, 1:, 6:, :4, :3], pos[:, 6:, :4, :3])


def test_a_position_model_refuses_an_input_without_its_position_channels():
    from ml.engine.grounding import grounding_from_spec
    from ml.specs import InputSpec

    net = grounding_from_spec(PARENT_NETWORK).eval()
    with pytest.raises(ValueError, match="1 image channels \\+ 3 position channels"):
        net(torch.zeros(1, 1, 24, 24, 16), torch.zeros(1, 384))
    from ml.engine.inference import predict
    from ml.specs import ModelError

    spec = InputSpec.from_dict({"ndim": 3, "roi_size": [24, 24, 16]})
    with pytest.raises(ModelError, match="affine"):
        predict(net, np.zeros((30, 30, 20), np.float32), [1.0, 1.0, 1.0], spec, ["finding"],
                text_embedding=torch.zeros(384))  # fmt: skip


def test_toy_training_learns_text_and_position_and_stores_the_metrics(
    tmp_path, make_user, api_client, capsys
):
    from annotation.training import accepted_examples
    from ml.grounding_training import grounding_predictor
    from ml.training import training_run_create, training_run_execute
    from releases.evaluation import release_cases

    # Given a toy project: two identical nodules per CT that only the sentence and the position tell apart,
    # its accepted (sentence, mask) findings, a frozen release and an untrained one-channel grounding model
    toy = toy_project(tmp_path, make_user, patients=6)
    examples = accepted_examples(toy.project, toy.findings, None)
    assert {e["text"] for e in examples} == {RIGHT_UPPER, LEFT_LOWER}
    # When a training run is made from them: evaluated on the release's validation split, whose patients
    # are not trained on
    run = training_run_create(parent=toy.parent, examples=examples, params=PARAMS)
    assert run.split["evaluation"]["source"] == "release" and run.split["evaluation"]["split"] == "val"
    assert run.split["val"] and not set(run.split["train"]) & set(run.split["val"])
    val_cases = release_cases(toy.release, "val")
    assert {c.scan_id for c in val_cases} == set(run.split["val"])
    # ... and trained (a worker crash at step 60 resumes from the checkpoint of step 50)

    def crash(step, loss):
        if step == 60:
            raise RuntimeError("worker killed (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        training_run_execute(run=run, device="cpu", on_step=crash)
    run.refresh_from_db()
    assert run.step == 50 and "parent_grounding" in run.metrics
    run = training_run_execute(run=run, device="cpu")
    # Then the new version beats the untrained parent on the ReXGroundingCT metrics, stored on it
    m = run.metrics
    assert run.status == "succeeded" and m["resumed_from"] == 50 and m["steps"] == PARAMS["steps"]
    assert m["grounding"]["findings"] == 2 * len(val_cases)
    assert m["grounding"]["dice_mean"] > m["parent_grounding"]["dice_mean"] + 0.3, m
    assert m["grounding"]["dice_mean"] >= 0.5 and m["grounding"]["hit_rate"] == 1.0, m
    new = run.result
    assert new is not None and new.parent_id == toy.parent.pk and new.task == "grounding"
    assert (
        new.metrics["grounding"] == m["grounding"]
        and new.metrics["evaluated_on"]["release"] == toy.release.pk
    )
    assert set(new.metrics["grounding"]) >= {"dice_mean", "hit_rate", "instance", "distance", "by_category"}
    json.dumps(new.metrics)  # plain JSON on the version
    # ... and it separates the two identical-looking nodules by sentence: each sentence's mask is its own
    # nodule, not the other one
    from ml.engine.loading import load_model

    version = ModelVersion.objects.get(pk=new.pk)
    from core.storage import storage_local_copy

    with storage_local_copy(version.weights.name) as local:
        model = load_model(local, version.format, network=version.network)
    predict = grounding_predictor(model, version, device="cpu")
    from releases.metrics import dice

    own, other = [], []
    for case in val_cases:
        masks = predict(case)
        by_text = {f.text: f.mask for f in case.findings}
        for f, mask in zip(case.findings, masks, strict=True):
            wrong = by_text[LEFT_LOWER if f.text == RIGHT_UPPER else RIGHT_UPPER]
            assert mask is not None, f.text
            own.append(dice(mask, f.mask))
            other.append(dice(mask, wrong))
            assert own[-1] > other[-1], f.text
    assert np.mean(own) >= 0.6 and np.mean(other) <= 0.15, (own, other)
    # The versions' figures are listed by the API and the CLI; any version can be evaluated and keep them
    from django.core.management import call_command
    from django.urls import reverse

    listed = api_client(toy.annotator).get(reverse("project-models", args=[toy.project.slug])).json()
    by_id = {v["id"]: v for v in listed}
    assert by_id[new.pk]["metrics"]["grounding"]["dice_mean"] == pytest.approx(m["grounding"]["dice_mean"])
    call_command(
        "evaluate_grounding", "--project", toy.project.slug, "--model", "grounder", "--model-version", "1",
        "--device", "cpu",
    )  # fmt: skip
    toy.parent.refresh_from_db()
    assert toy.parent.metrics["grounding"]["dice_mean"] == pytest.approx(m["parent_grounding"]["dice_mean"])
    call_command("model_versions", "--project", toy.project.slug)
    out = capsys.readouterr().out
    assert f"grounder v1 (#{toy.parent.pk}, grounding, ready): Dice" in out
    assert f"grounder v2 (#{new.pk}, grounding" in out and f"{toy.release.dataset.slug} v1 val" in out


def test_one_channel_models_get_their_labels_and_grounding_needs_sentences(tmp_path, make_user):
    from ml.models import ModelVersion
    from ml.training import TrainingError, trainable_labels, training_run_create

    toy = toy_project(tmp_path, make_user, patients=3, slug="toy3")
    assert trainable_labels(toy.parent) is None  # any finding: its sentence is the entity
    seg = ModelVersion(task="segmentation", label_names=["nodule"])
    assert trainable_labels(seg) == ["nodule"]  # a sigmoid model: its one channel, not an empty list
    assert trainable_labels(ModelVersion(task="segmentation", label_names=["background", "a", "b"])) == [
        "a",
        "b",
    ]
    from annotation.training import accepted_examples

    examples = accepted_examples(toy.project, toy.findings, None)
    no_text = [{k: v for k, v in e.items() if k not in ("text", "finding")} for e in examples]
    with pytest.raises(TrainingError, match="^examples: proposal #None has no sentence"):
        training_run_create(parent=toy.parent, examples=no_text)


@pytest.mark.slow
def test_real_ct_release_grounding_improves_over_the_untrained_model(tmp_path, shared_data, make_user):
    from tests.ml.grounding_toy import real_ct_grounding
    from tests.releases.real import real_release

    # Given the real release of the chest CT lungdx-a0002 with accepted masks on its mass and effusion
    real = real_release(shared_data, tmp_path / "data", make_user)
    # When an untrained grounding model trains a few steps on its (sentence, mask) pairs
    out = real_ct_grounding(real, tmp_path, steps=80)
    before, after = out["before"], out["after"]
    # Then the ReXGroundingCT metrics on the release's case are better than the untrained model's
    assert before["findings"] == after["findings"] == 2
    assert any("mass" in t for t in out["texts"]) and any("effusion" in t for t in out["texts"])
    # (80 CPU steps on one case: the mass is found, about 0.1 Dice, the effusion not yet; bench_grounding
    # gives the figures. Asserted: clearly better than untrained, not a level one run reaches by chance.)
    assert after["dice_mean"] > max(3 * before["dice_mean"], before["dice_mean"] + 0.02), (
        before["per_case"], after["per_case"], out["voxels_true_predicted"],
    )  # fmt: skip

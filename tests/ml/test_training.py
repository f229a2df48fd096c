"""Training runs: a frozen, patient-split snapshot of labelled cases; training that resumes from its last
checkpoint after a crash; a new model version only when it beats its parent on validation Dice."""

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from ml.models import ModelVersion, TrainingRun
from ml.preannotate import Region, _store, scan_volume
from ml.services import model_version_register
from ml.training import TrainingError, training_run_create, training_run_execute
from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest

pytestmark = pytest.mark.django_db(transaction=True)
NETWORK = {
    "name": "UNet",
    "args": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    },
}
SPEC = {"ndim": 3, "channels": 1, "roi_size": [32, 32, 8], "window": [-1000, 400], "modality": ["CT"]}


@pytest.fixture
def labelled(project, tmp_path):
    """Three patients' CTs, each with a 'lung' proposal (HU < -500 inside the body)."""
    proposals = []
    for i in range(3):
        volume, _ = demo.synthetic_chest_ct(shape=(8, 48, 48), spacing=(5.0, 6.0, 6.0))
        demo.write_ct_series(
            tmp_path / f"ct{i}", volume, (5.0, 6.0, 6.0), patient_id=f"P{i}", accession=f"A{i}"
        )
        before = set(Scan.objects.values_list("pk", flat=True))
        assert not scans_ingest(project=project, paths=[tmp_path / f"ct{i}"], workers=1).errors
        scan = Scan.objects.exclude(pk__in=before).get()
        hu = scan_volume(scan)
        (proposal,) = _store(
            scan, "lungs", {}, [Region(label="lung", mask=(hu < -500) & (hu > -990), code="lung")], None, None
        )
        proposals.append(proposal)
    torch.manual_seed(0)
    weights = tmp_path / "unet.pt"
    torch.save(UNet(**NETWORK["args"]).state_dict(), weights)
    parent = model_version_register(
        project=project,
        path=weights,
        fmt="state-dict",
        name="lungnet",
        input_spec=SPEC,
        label_names=["background", "lung"],
        network=NETWORK,
    )
    parent.refresh_from_db()
    assert parent.status == "ready", parent.error
    return parent, proposals


def test_split_by_patient_and_clear_errors(labelled):
    parent, proposals = labelled
    run = training_run_create(
        parent=parent, proposal_ids=[p.pk for p in proposals], params={"val_fraction": 0.34}
    )
    patients = {e["scan"]: e["patient"] for e in run.examples}
    assert run.split["train"] and run.split["val"]
    assert not {patients[s] for s in run.split["train"]} & {patients[s] for s in run.split["val"]}
    assert all(len(e["sha256"]) == 64 for e in run.examples)
    with pytest.raises(TrainingError, match="^examples: cases of at least 2 patients"):
        training_run_create(parent=parent, proposal_ids=[proposals[0].pk])
    with pytest.raises(TrainingError, match="^proposal_ids: not region proposals"):
        training_run_create(parent=parent, proposal_ids=[999999])
    with pytest.raises(TrainingError, match="^params: steps"):
        training_run_create(parent=parent, proposal_ids=[p.pk for p in proposals], params={"steps": 0})


def test_crash_resumes_from_checkpoint_and_a_better_model_becomes_a_version(labelled):
    parent, proposals = labelled
    params = {
        "steps": 40,
        "checkpoint_every": 10,
        "batch_size": 2,
        "learning_rate": 0.01,
        "val_fraction": 0.34,
    }
    run = training_run_create(parent=parent, proposal_ids=[p.pk for p in proposals], params=params)

    def crash(step, loss):
        if step == 15:
            raise RuntimeError("worker killed (simulated at step 15)")

    with pytest.raises(RuntimeError, match="simulated"):
        training_run_execute(run=run, device="cpu", on_step=crash)
    run.refresh_from_db()
    assert run.step == 10 and run.checkpoint  # the last checkpoint before the crash
    run = training_run_execute(run=run, device="cpu")
    assert run.status == "succeeded" and run.metrics["resumed_from"] == 10 and run.metrics["steps"] == 40
    assert run.metrics["val_dice"] > run.metrics["parent_val_dice"], run.metrics
    new = run.result
    assert new is not None and new.parent_id == parent.pk and new.version == 2 and new.status == "ready"
    assert new.metrics["val_dice"] == pytest.approx(run.metrics["val_dice"])
    assert ModelVersion.objects.count() == 2 and TrainingRun.objects.count() == 1
    assert np.isfinite(run.metrics["patches_per_second"])


def test_training_over_the_api_and_cli(project, manager, annotator, api_client, labelled, capsys):
    from django.core.management import call_command
    from django.urls import reverse

    parent, proposals = labelled
    body = {
        "model": "lungnet",
        "proposal_ids": [p.pk for p in proposals],
        "params": {"steps": 4, "checkpoint_every": 2, "val_fraction": 0.34},
    }
    assert (
        api_client(annotator)
        .post(reverse("project-training-runs", args=[project.slug]), body, format="json")
        .status_code
        == 403
    )
    started = api_client(manager).post(
        reverse("project-training-runs", args=[project.slug]), body, format="json"
    )
    assert started.status_code == 202, started.content
    detail = api_client(manager).get(reverse("training-run-detail", args=[started.json()["id"]])).json()
    assert detail["status"] == "succeeded" and detail["step"] == 4 and "val_dice" in detail["metrics"]
    bad = api_client(manager).post(
        reverse("project-training-runs", args=[project.slug]), {**body, "model": "nope"}, format="json"
    )
    assert bad.status_code == 400 and "no ready version of 'nope'" in str(bad.json())
    call_command(
        "train_model",
        "--project",
        project.slug,
        "--model",
        "lungnet",
        "--proposals",
        ",".join(str(p.pk) for p in proposals),
        "--params",
        '{"steps": 2, "val_fraction": 0.34}',
    )
    assert "validation Dice" in capsys.readouterr().out

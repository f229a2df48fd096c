"""Model registry (register, validate by a forward pass, reject broken files with file and field) and
pre-annotation of a stored CT with a registered model: masks on the scan's grid, volume, confidence."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from labeling.models import RegionProposal
from ml.models import ModelVersion
from ml.preannotate import PreannotateError, preannotate
from ml.services import model_version_register
from ml.specs import ModelError
from studies import demo
from studies.services.scans import scans_ingest

pytestmark = pytest.mark.django_db(transaction=True)  # validation jobs run when their transaction commits
SPEC = {"ndim": 3, "channels": 1, "roi_size": [32, 32, 16], "window": [-1000, 400], "modality": ["CT"]}


class Soft(torch.nn.Module):
    """A 'model' with a known answer: soft tissue (windowed intensity > 0.6) is class 1."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(30.0))

    def forward(self, x):
        logit = self.scale * (x - 0.6)
        return torch.cat([-logit, logit], dim=1)


@pytest.fixture
def ct_scan(project, tmp_path):
    volume, _ = demo.synthetic_chest_ct(shape=(16, 64, 64), spacing=(5.0, 4.0, 4.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 4.0, 4.0))
    summary = scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1)
    assert not summary.errors
    from studies.models import Scan

    return Scan.objects.get(project=project)


def _scripted(tmp_path):
    path = tmp_path / "soft.ts"
    torch.jit.save(torch.jit.script(Soft()), path)
    return path


def test_register_validates_and_preannotates(project, ct_scan, tmp_path):
    version = model_version_register(
        project=project,
        path=_scripted(tmp_path),
        fmt="torchscript",
        name="soft",
        input_spec=SPEC,
        label_names=["background", "soft_tissue"],
    )
    version.refresh_from_db()
    assert version.status == "ready" and version.version == 1 and version.job_id
    assert (tmp_path / "soft.ts").exists()  # the caller's file is copied, not moved
    outcome = preannotate(scan=ct_scan, generator="model:soft")
    (proposal,) = outcome.proposals
    assert proposal.label == "soft_tissue" and proposal.model_version_id == version.pk
    with default_storage.open(proposal.mask.name, "rb") as fh:
        image = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(fh.read()))
    mask = np.asarray(image.dataobj) > 0
    assert mask.shape == tuple(ct_scan.shape) and np.allclose(image.affine, np.asarray(ct_scan.affine))
    from ml.preannotate import scan_volume

    truth = scan_volume(ct_scan) > -1000 + 0.6 * 1400
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9 and proposal.confidence > 0.8
    assert proposal.volume_ml == pytest.approx(mask.sum() * np.prod(ct_scan.spacing) / 1000)
    assert set(outcome.seconds) >= {"read", "model", "store", "total"}
    again = model_version_register(
        project=project,
        path=_scripted(tmp_path),
        fmt="torchscript",
        name="soft",
        input_spec=SPEC,
        label_names=["background", "soft_tissue"],
    )
    assert again.version == 2


def test_broken_files_are_rejected_and_never_used(project, ct_scan, tmp_path):
    bad = model_version_register(
        project=project,
        path=_scripted(tmp_path),
        fmt="torchscript",
        name="soft",
        input_spec=SPEC,
        label_names=["background", "a", "b"],
    )
    bad.refresh_from_db()
    assert bad.status == "rejected" and "label_names" in bad.error and "soft.ts" in bad.error
    with pytest.raises(ModelError, match="no ready version of 'soft'"):
        preannotate(scan=ct_scan, generator="model:soft")
    with pytest.raises(ModelError, match=r"\[network\]"):
        model_version_register(
            project=project,
            path=_scripted(tmp_path),
            fmt="state-dict",
            name="x",
            input_spec=SPEC,
            label_names=["a"],
        )
    with pytest.raises(ModelError, match=r"\[roi_size\]"):
        model_version_register(
            project=project,
            path=_scripted(tmp_path),
            fmt="torchscript",
            name="x",
            input_spec={"ndim": 3, "roi_size": [8]},
            label_names=["a"],
        )
    assert ModelVersion.objects.count() == 1


def test_modality_and_dimension_mismatch_is_a_clear_error(project, ct_scan, tmp_path):
    model_version_register(
        project=project,
        path=_scripted(tmp_path),
        fmt="torchscript",
        name="mr",
        input_spec={**SPEC, "modality": ["MR"]},
        label_names=["background", "x"],
    )
    with pytest.raises(PreannotateError, match="^modality: model mr v1 takes MR, the scan is CT"):
        preannotate(scan=ct_scan, generator="model:mr")
    with pytest.raises(PreannotateError, match="^generator:"):
        preannotate(scan=ct_scan, generator="magic")
    assert RegionProposal.objects.count() == 0


def test_cli_register_and_preannotate_json(project, ct_scan, tmp_path, capsys):
    def register(labels):
        options = ["--project", project.slug, "--name", "soft", "--format", "torchscript"]
        call_command("register_model", str(_scripted(tmp_path)), *options, "--input-spec", json.dumps(SPEC),
                     "--labels", labels)  # fmt: skip

    register("background,soft_tissue")
    assert "soft v1" in capsys.readouterr().out
    call_command("preannotate", "--scan", str(ct_scan.pk), "--generator", "model:soft", "--json")
    out = json.loads(capsys.readouterr().out)
    (p,) = out["proposals"]
    assert p["label"] == "soft_tissue" and p["volume_ml"] > 0
    with pytest.raises(CommandError, match="rejected"):
        register("a,b,c")


def test_a_job_run_again_after_a_crash_leaves_no_duplicates(project, ct_scan, tmp_path):
    from core.models import Job
    from ml.preannotate import preannotate_job

    model_version_register(
        project=project,
        path=_scripted(tmp_path),
        fmt="torchscript",
        name="soft",
        input_spec=SPEC,
        label_names=["background", "soft_tissue"],
    )
    job = Job.objects.create(
        project=project,
        kind="preannotate",
        params={"scan": ct_scan.pk, "generator": "model:soft", "params": {}},
    )
    first = preannotate_job(job=job)[0]["proposals"]
    second = preannotate_job(job=job)[0]["proposals"]  # the broker delivered the job again
    assert len(first) == len(second) == 1 and RegionProposal.objects.filter(scan=ct_scan).count() == 1
    assert RegionProposal.objects.get().params["job"] == job.pk


def test_out_of_gpu_memory_falls_back_and_says_so(monkeypatch):
    """No GPU here: the out-of-memory error a CUDA device raises is simulated (the only mock in this file);
    the fallback path itself runs for real on the CPU."""
    from ml.engine import inference
    from ml.specs import InputSpec

    real = inference._infer
    calls = []

    def flaky(model, x, spec, device, sw_device, sw_batch_size, overlap):
        calls.append((device, sw_device, sw_batch_size))
        if len(calls) < 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, x, spec, "cpu", "cpu", sw_batch_size, overlap)

    monkeypatch.setattr(inference, "_infer", flaky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    volume = np.full((20, 20, 10), 100.0, dtype=np.float32)
    out = inference.predict(
        Soft(),
        volume,
        [1.0, 1.0, 1.0],
        InputSpec.from_dict(SPEC),
        ["background", "soft"],
        device="cuda",
        sw_batch_size=4,
    )
    assert [c[1:] for c in calls] == [("cuda", 4), ("cpu", 1), ("cpu", 4)]
    assert out.device == "cpu" and len(out.warnings) == 2 and "ran on the CPU" in out.warnings[1]
    assert out.labels and out.mask(out.labels[0]).all()


def test_text_conditioned_grounding_model_proposes_per_finding_sentence(project, ct_scan, tmp_path):
    """The registry takes the platform's TextConditionedUNet as a state dict; pre-annotation grounds each
    present finding sentence of the study's report (or the text given). Untrained weights: the test checks
    the path (shapes, labels, texts), not the quality."""
    from labeling.services import label_run_execute, label_run_get_or_create
    from ml.engine.grounding import grounding_from_spec
    from studies.models import Report

    network = {
        "name": "TextConditionedUNet",
        "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8], "strides": [2]},
    }
    torch.manual_seed(0)
    path = tmp_path / "grounding.pt"
    torch.save(grounding_from_spec(network).state_dict(), path)
    version = model_version_register(
        project=project,
        path=path,
        fmt="state-dict",
        name="ground",
        task="grounding",
        input_spec={**SPEC, "roi_size": [32, 32, 16]},
        label_names=["finding"],
        network=network,
    )
    version.refresh_from_db()
    assert version.status == "ready", version.error
    with pytest.raises(PreannotateError, match="^params: .* no present finding to ground"):
        preannotate(scan=ct_scan, generator="model:ground")
    Report.objects.create(
        project=project,
        study=ct_scan.study,
        external_id="r",
        source="text",
        raw_text="x",
        checksum="1",
        findings="There is a 14 mm nodule in the right upper lobe. No effusion.",
    )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    outcome = preannotate(scan=ct_scan, generator="model:ground", params={"device": "cpu"})
    assert outcome.proposals, outcome.warnings
    assert {p.code for p in outcome.proposals} == {"Lung Lesion"}
    assert all(p.text == "There is a 14 mm nodule in the right upper lobe." for p in outcome.proposals)
    given = preannotate(scan=ct_scan, generator="model:ground", params={"text": ["left lower lobe opacity"]})
    assert all(p.text == "left lower lobe opacity" and p.label == "finding" for p in given.proposals)

"""Pre-annotating a scan again with the same generator replaces that generator's earlier proposals of the
scan (new rows, new mask files, the old files removed) instead of adding duplicates; a proposal that a
finding's annotation started from is kept, marked superseded, and a mask file a training run names stays.
Lungs of a synthetic chest CT, as a job on the ``gpu`` queue (in-process here) and from the CLI."""

import json

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from annotation.models import Annotation, AnnotationKind, Finding
from core.storage import project_key, storage_save_bytes
from labeling.models import RegionProposal
from ml.models import ModelTask, ModelVersion, TrainingRun
from ml.preannotate import preannotate_start
from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest

pytestmark = pytest.mark.django_db(transaction=True)  # jobs run, and old files go, once their commit is done


@pytest.fixture
def ct(project, tmp_path) -> Scan:
    volume, _ = demo.synthetic_chest_ct(shape=(12, 48, 48), spacing=(5.0, 5.0, 5.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 5.0, 5.0))
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    return Scan.objects.get(project=project)


def _lungs(scan: Scan) -> dict[str, RegionProposal]:
    """The scan's current (not superseded) lungs proposals by label."""
    lungs = RegionProposal.objects.filter(scan=scan, params__generator="lungs")
    return {p.label: p for p in lungs if not p.params.get("superseded")}


def _preannotate(scan: Scan) -> dict[str, RegionProposal]:
    job = preannotate_start(scan=scan, generator="lungs")
    job.refresh_from_db()
    assert job.status == "succeeded", job.message
    assert sorted(p["id"] for p in job.result["proposals"]) == sorted(p.pk for p in _lungs(scan).values())
    return _lungs(scan)


def test_a_second_job_replaces_the_generators_proposals_of_the_scan(project, ct):
    # Given the lungs of the scan, and a proposal of another generator on it
    first = _preannotate(ct)
    assert sorted(first) == ["left_lung", "right_lung"]
    other_key = storage_save_bytes(project_key(project, "proposals", f"scan-{ct.pk}", "other.nii.gz"), b"x")
    other = RegionProposal.objects.create(
        project=project, scan=ct, source="model", code="nodule", box=[0, 0, 0, 1, 1, 1], mask=other_key,
        params={"generator": "model:other"},
    )  # fmt: skip
    # When a new job pre-annotates the scan with lungs again
    second = _preannotate(ct)
    # Then the scan has the same proposals, as new rows with new mask files; the old files are gone
    assert sorted(second) == ["left_lung", "right_lung"]
    assert RegionProposal.objects.filter(scan=ct, params__generator="lungs").count() == 2
    assert not {p.pk for p in first.values()} & {p.pk for p in second.values()}
    assert not any(default_storage.exists(p.mask.name) for p in first.values())
    assert all(default_storage.exists(p.mask.name) for p in second.values())
    assert {p.params["job"] for p in second.values()} != {p.params["job"] for p in first.values()}
    # and the other generator's proposal is left as it was
    other.refresh_from_db()
    assert default_storage.exists(other.mask.name) and "superseded" not in other.params


def test_a_proposal_an_annotation_started_from_is_kept_and_marked_superseded(project, ct, capsys):
    first = _preannotate(ct)
    right = first["right_lung"]
    # Given a finding whose annotation started from the right lung proposal
    finding = Finding.objects.create(
        project=project, study=ct.study, scan=ct, text="right lung", code="right_lung", current_version=1
    )
    annotation = Annotation.objects.create(
        finding=finding, version=1, kind=AnnotationKind.MASK, box=right.box, region_proposal=right
    )
    # When the scan is pre-annotated with lungs again, from the CLI (no job)
    call_command("preannotate", "--scan", str(ct.pk), "--generator", "lungs", "--json")
    made = {p["label"]: p["id"] for p in json.loads(capsys.readouterr().out)["proposals"]}
    # Then there is one current proposal per lung, the new ones
    current = _lungs(ct)
    assert {label: p.pk for label, p in current.items()} == made
    assert not RegionProposal.objects.filter(pk=first["left_lung"].pk).exists()
    assert not default_storage.exists(first["left_lung"].mask.name)
    # and the proposal the annotation started from is kept, with its mask, marked superseded
    right.refresh_from_db()
    annotation.refresh_from_db()
    assert annotation.region_proposal_id == right.pk
    assert right.params["superseded"] is True and right.params["superseded_by_job"] is None
    assert default_storage.exists(right.mask.name)
    # and a third run keeps it again and replaces only the current ones
    _preannotate(ct)
    assert RegionProposal.objects.filter(scan=ct, params__generator="lungs").count() == 3
    assert RegionProposal.objects.filter(pk=right.pk).exists()


def test_a_mask_file_a_training_run_names_stays_when_its_proposal_is_replaced(project, ct):
    first = _preannotate(ct)
    left = first["left_lung"]
    parent = ModelVersion.objects.create(
        project=project, name="lungs", version=1, task=ModelTask.choices[0][0], format="torchscript",
        weights="w.ts", checksum="0" * 64,
    )  # fmt: skip
    TrainingRun.objects.create(
        project=project, parent=parent, name="lungs",
        examples=[{"proposal": left.pk, "scan": ct.pk, "label": "left_lung", "mask": left.mask.name}],
    )  # fmt: skip
    _preannotate(ct)
    assert not RegionProposal.objects.filter(pk=left.pk).exists()
    assert default_storage.exists(left.mask.name)  # the run reads it by key and sha256 when it resumes
    assert not default_storage.exists(first["right_lung"].mask.name)

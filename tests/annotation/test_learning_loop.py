"""The learning loop: accepted findings' masks train a new model version, and the annotation queue can be
ordered by active-learning scores."""

import pytest
import torch
from django.urls import reverse
from monai.networks.nets import UNet

from annotation.models import Finding, ReviewTask
from annotation.services import annotation_save, findings_from_proposals, task_approve, task_next, task_submit
from annotation.training import accepted_examples
from core.models import Role
from core.services import membership_set
from labeling.services import label_run_execute, label_run_get_or_create
from ml.models import CaseScore, TrainingRun
from ml.preannotate import scan_volume
from ml.services import model_version_register
from ml.training import TrainingError
from studies import demo
from studies.models import Report, Scan
from studies.services.scans import scans_ingest
from tests.ml.test_training import NETWORK, SPEC

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def accepted(project, tmp_path, make_user):
    project.label_schema, project.qa_sample_rate = "rexgroundingct", 0.0
    project.save()
    ann, rad = make_user("ann"), make_user("rad")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    for i in range(3):
        volume, _ = demo.synthetic_chest_ct(shape=(8, 40, 40), spacing=(5.0, 7.0, 7.0))
        demo.write_ct_series(
            tmp_path / f"c{i}", volume, (5.0, 7.0, 7.0), patient_id=f"P{i}", accession=f"A{i}"
        )
        before = set(Scan.objects.values_list("pk", flat=True))
        scans_ingest(project=project, paths=[tmp_path / f"c{i}"], workers=1)
        scan = Scan.objects.exclude(pk__in=before).get()
        Report.objects.create(
            project=project,
            study=scan.study,
            external_id=f"r{i}",
            source="text",
            raw_text="x",
            checksum=str(i),
            findings="There is a 14 mm nodule in the right upper lobe.",
        )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    findings_from_proposals(project=project)
    while (task := task_next(project=project, user=ann, stages=("annotate",))) is not None:
        finding = task.finding
        hu = scan_volume(finding.scan)
        annotation_save(
            task_id=task.pk,
            user=ann,
            base_version=finding.current_version,
            kind="mask",
            mask=(hu > -200) & (hu < 200),
        )
        task_submit(task_id=task.pk, user=ann, decision="accept")
    while (task := task_next(project=project, user=rad, stages=("review", "qa"))) is not None:
        task_approve(task_id=task.pk, user=rad)
    torch.manual_seed(0)
    weights = tmp_path / "unet.pt"
    torch.save(UNet(**NETWORK["args"]).state_dict(), weights)
    model_version_register(
        project=project,
        path=weights,
        fmt="state-dict",
        name="tissue",
        input_spec=SPEC,
        label_names=["background", "tissue"],
        network=NETWORK,
    )
    return Finding.objects.filter(status="accepted")


def test_accepted_masks_train_a_new_version(project, accepted, make_user, api_client):
    assert accepted.count() == 3
    with pytest.raises(TrainingError, match="maps to '2d'"):
        accepted_examples(project, [f.pk for f in accepted], ["tissue"])
    examples = accepted_examples(project, [f.pk for f in accepted], ["tissue"], {"2d": "tissue"})
    assert {e["finding"] for e in examples} == {f.pk for f in accepted} and all(
        e["annotation"] for e in examples
    )
    manager = make_user("boss")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    response = api_client(manager).post(
        reverse("train-from-accepted", args=[project.slug]),
        {
            "model": "tissue",
            "label_map": {"2d": "tissue"},
            "params": {"steps": 30, "learning_rate": 0.02, "val_fraction": 0.34},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    run = TrainingRun.objects.get(pk=response.json()["training_run"])
    assert run.status == "succeeded" and len(run.examples) == 3 and run.metrics["steps"] == 30
    assert run.result is not None and run.result.parent.name == "tissue", run.metrics


def test_queue_ordered_by_active_learning_scores(project, tmp_path, make_user, api_client):
    project.label_schema = "rexgroundingct"
    project.save()
    scans = []
    for i in range(3):
        volume, _ = demo.synthetic_chest_ct(shape=(6, 32, 32), spacing=(5.0, 8.0, 8.0))
        demo.write_ct_series(
            tmp_path / f"q{i}", volume, (5.0, 8.0, 8.0), patient_id=f"Q{i}", accession=f"Q{i}"
        )
        before = set(Scan.objects.values_list("pk", flat=True))
        scans_ingest(project=project, paths=[tmp_path / f"q{i}"], workers=1)
        scans.append(Scan.objects.exclude(pk__in=before).get())
        Report.objects.create(
            project=project,
            study=scans[-1].study,
            external_id=f"q{i}",
            source="text",
            raw_text="x",
            checksum=f"q{i}",
            findings="Small left pleural effusion.",
        )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    findings_from_proposals(project=project)
    for scan, score in zip(scans, (0.2, 0.9, 0.5), strict=True):
        CaseScore.objects.create(project=project, scan=scan, strategy="random", score=score)
    manager, ann = make_user("boss"), make_user("ann")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    changed = (
        api_client(manager)
        .post(reverse("queue-priorities", args=[project.slug]), {"strategy": "random"}, format="json")
        .json()["changed"]
    )
    assert changed == 3
    first = task_next(project=project, user=ann, stages=("annotate",))
    assert first.finding.scan_id == scans[1].pk  # the highest score
    assert list(ReviewTask.objects.order_by("-priority").values_list("finding__scan_id", flat=True)) == [
        scans[1].pk,
        scans[2].pk,
        scans[0].pk,
    ]

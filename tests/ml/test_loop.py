"""The learning loop (issue 16 item 5): accepted findings start training by themselves, a better version
scores the open cases and re-orders the queue, the next task is the case it is least sure of; the queue
refuses what it cannot order by (unknown strategies, no stored scores) and reads the version that has
scores; foreground-aware random draws nnActive's patches, more of them where the scans have foreground.

Real database, real training and scoring (a tiny MONAI UNet on synthetic CTs, on the CPU), the review
services and the API."""

import json
import re

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from django.urls import reverse
from monai.networks.nets import UNet

from annotation.loop import LOOP_JOB, loop_after_accept, loop_job, loop_plan
from annotation.models import Finding, ReviewTask
from annotation.services import annotation_save, findings_from_proposals, task_approve, task_next, task_submit
from config.celery import app
from core.models import Job, Role
from core.services import membership_set
from labeling.services import label_run_execute, label_run_get_or_create
from ml.active_learning import ranked, scores_compute
from ml.engine.active import foreground_aware_allocation
from ml.models import CaseScore, ModelVersion, TrainingRun
from ml.preannotate import Region, _store, scan_volume
from ml.services import model_version_register
from studies import demo
from studies.models import Report, Scan
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


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one intra-op thread is fastest and does not thrash a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cases(project, tmp_path, n, sentence, shape=(8, 40, 40), spacing=(5.0, 7.0, 7.0), noise=0.0):
    """``n`` patients, each a synthetic chest CT with a report stating ``sentence``; their findings and
    review tasks from the rule labeler. ``noise``: patient i's CT gets Gaussian noise of ``i * noise`` HU
    (so that a model is not equally sure of every case). Returns the scans in patient order."""
    scans = []
    rng = np.random.default_rng(0)
    for i in range(n):
        volume, _ = demo.synthetic_chest_ct(shape=shape, spacing=spacing)
        if noise:
            noisy = volume + rng.normal(0.0, i * noise, volume.shape)
            volume = np.clip(noisy, -1024, 3000).astype(np.int16)
        demo.write_ct_series(tmp_path / f"c{i}", volume, spacing, patient_id=f"P{i}", accession=f"A{i}")
        before = set(Scan.objects.values_list("pk", flat=True))
        assert not scans_ingest(project=project, paths=[tmp_path / f"c{i}"], workers=1).errors
        scans.append(Scan.objects.exclude(pk__in=before).get())
        Report.objects.create(
            project=project,
            study=scans[-1].study,
            external_id=f"r{i}",
            source="text",
            raw_text="x",
            checksum=str(i),
            findings=sentence,
        )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert findings_from_proposals(project=project) == n
    return scans


def _register(project, tmp_path, name, labels, validate=True, seed=0):
    torch.manual_seed(seed)
    weights = tmp_path / f"{name}-{seed}.pt"
    torch.save(UNet(**NETWORK["args"]).state_dict(), weights)
    version = model_version_register(
        project=project,
        path=weights,
        fmt="state-dict",
        name=name,
        input_spec=SPEC,
        label_names=labels,
        network=NETWORK,
        validate=validate,
    )
    version.refresh_from_db()
    return version


def _accept_next(project, ann, rad) -> Finding:
    """The annotator takes the next task, draws the soft tissue (-200..200 HU) and accepts; a radiologist
    approves it (QA off): the finding is accepted."""
    task = task_next(project=project, user=ann, stages=("annotate",))
    hu = scan_volume(task.finding.scan)
    annotation_save(
        task_id=task.pk,
        user=ann,
        base_version=task.finding.current_version,
        kind="mask",
        mask=(hu > -200) & (hu < 200),
    )
    task_submit(task_id=task.pk, user=ann, decision="accept")
    review = task_next(project=project, user=rad, stages=("review",))
    assert review.pk == task.pk
    task_approve(task_id=task.pk, user=rad)
    finding = Finding.objects.get(pk=task.finding_id)
    assert finding.status == "accepted"
    return finding


def test_accept_train_score_reorder_next_task(project, tmp_path, make_user, capsys):
    """End to end: two accepted findings (train_after_accepted = 2) start a loop job by themselves; it trains
    a version that beats its parent, scores the open cases with it and re-orders the queue; the annotator's
    next task is the case the new version is least sure of; one more acceptance does not start another."""
    project.label_schema, project.qa_sample_rate, project.train_after_accepted = "rexgroundingct", 0.0, 2
    project.save()
    ann, rad = make_user("ann"), make_user("rad")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    scans = _cases(project, tmp_path, 5, "There is a 14 mm nodule in the right upper lobe.", noise=60.0)
    assert set(Finding.objects.values_list("code", flat=True)) == {"2d"}
    # A model whose label is the findings' ReXGroundingCT category: the loop maps them by code.
    parent = _register(project, tmp_path, "nodule", ["background", "2d"])
    assert parent.status == "ready", parent.error

    first = _accept_next(project, ann, rad)
    assert not Job.objects.filter(kind=LOOP_JOB).exists()
    assert loop_after_accept(project_id=project.pk)["reason"] == "1 of 2 new accepted findings"
    call_command("learning_loop", project.slug, "--json")
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "nodule" and plan["label_map"] == {"2d": "2d"} and plan["new"] == 1
    assert plan["strategy"] == "predictive_entropy" and plan["train_after_accepted"] == 2

    second = _accept_next(project, ann, rad)  # the second acceptance starts the loop job
    (job,) = Job.objects.filter(project=project, kind=LOOP_JOB)
    assert job.status == "succeeded", job.message
    run = TrainingRun.objects.get(pk=job.result["training_run"])
    assert run.job_id == job.pk and run.status == "succeeded"
    assert sorted(e["finding"] for e in run.examples) == sorted([first.pk, second.pk])
    assert run.metrics["val_dice"] > run.metrics["parent_val_dice"], run.metrics
    new = ModelVersion.objects.get(pk=job.result["model_version"])
    assert (new.name, new.version, new.parent_id, new.status) == ("nodule", 2, parent.pk, "ready")

    # The open cases (three findings not yet accepted) are scored with the new version, the queue follows.
    open_tasks = list(ReviewTask.objects.filter(stage="annotate").select_related("finding"))
    assert len(open_tasks) == 3
    scores = dict(
        CaseScore.objects.filter(model_version=new, strategy="predictive_entropy").values_list(
            "scan_id", "score"
        )
    )
    assert set(scores) == {t.finding.scan_id for t in open_tasks}
    assert all(0.0 < s < 1.0 for s in scores.values())
    assert len({round(s, 6) for s in scores.values()}) == 3  # the cases differ: the order means something
    assert job.result["scored"] == 3 and job.result["strategy"] == "predictive_entropy"
    for task in open_tasks:
        assert task.priority == pytest.approx(scores[task.finding.scan_id])
    nxt = task_next(project=project, user=ann, stages=("annotate",))
    assert nxt.finding.scan_id == max(scores, key=scores.get)
    m = run.metrics
    print(
        f"LOOP: {len(run.examples)} accepted findings -> run {run.pk} ({m['steps']} steps, "
        f"{m['train_cases']} train / {m['val_cases']} val) val Dice {m['parent_val_dice']:.3f} -> "
        f"{m['val_dice']:.3f}; v{new.version} scored {len(scores)} open cases "
        f"({', '.join(f'{v:.4f}' for v in sorted(scores.values(), reverse=True))}); "
        f"{job.result['reordered']} tasks re-ordered; "
        f"job {(job.finished_at - job.started_at).total_seconds():.1f} s; "
        f"next task: scan {nxt.finding.scan_id} (score {scores[nxt.finding.scan_id]:.4f})"
    )
    assert nxt.finding.scan_id == scans[4].pk  # the noisiest CT, not the oldest open task (scans[2])

    # Delivered again (a worker died after training): no second training, the same version scores again.
    again, _, _ = loop_job(job=job)
    assert again["model_version"] == new.pk and again["scored"] == 3
    assert ModelVersion.objects.filter(name="nodule").count() == 2 and TrainingRun.objects.count() == 1

    # One more acceptance is one new finding: no second loop job until the threshold is reached again.
    hu = scan_volume(nxt.finding.scan)
    annotation_save(
        task_id=nxt.pk, user=ann, base_version=nxt.finding.current_version, kind="mask", mask=hu > 0
    )
    task_submit(task_id=nxt.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=("review",)).pk, user=rad)
    assert Job.objects.filter(kind=LOOP_JOB).count() == 1
    later = loop_plan(project)
    assert later.new == 1 and later.parent.pk == new.pk and later.params == run.params

    for bad, message in (
        (["--label-map", "2d"], "--label-map: '2d' is not CODE=LABEL"),
        (["--model", "nope"], "model: no ready version of 'nope'"),
        (["--strategy", "vibes"], "strategy: 'vibes' is not one of"),
        (["--params", "[1]"], "--params: a JSON object"),
    ):
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command("learning_loop", project.slug, *bad)

    # The loop job goes to the gpu queue (it trains and scores).
    assert app.amqp.router.route({}, "annotation.learning_loop")["queue"].name == "gpu"


@pytest.fixture
def queue(project, tmp_path, make_user):
    project.label_schema = "rexgroundingct"
    project.save()
    scans = _cases(
        project, tmp_path, 4, "Small left pleural effusion.", shape=(6, 32, 32), spacing=(5.0, 8.0, 8.0)
    )
    manager, ann = make_user("boss"), make_user("ann")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    return scans, manager, ann


def _priorities():
    return dict(ReviewTask.objects.values_list("finding__scan_id", "priority"))


def test_queue_refuses_what_it_cannot_order_by_and_reads_the_version_with_scores(
    project, queue, tmp_path, api_client
):
    scans, manager, ann = queue
    older = _register(project, tmp_path, "m", ["background", "effusion"], validate=False, seed=1)
    newer = _register(project, tmp_path, "m", ["background", "effusion"], validate=False, seed=2)
    assert (older.version, newer.version) == (1, 2)
    for scan, score in zip(scans, (0.2, 0.9, 0.5, 0.1), strict=True):
        CaseScore.objects.create(
            project=project, scan=scan, model_version=older, strategy="predictive_entropy", score=score
        )
    client = api_client(manager)
    url = reverse("queue-priorities", args=[project.slug])
    before = _priorities()
    assert set(before.values()) == {0.0}

    refused = [
        ({"strategy": "vibes"}, "strategy"),
        ({"strategy": "power_random"}, "strategy"),  # power sampling is for model scores only
        ({"strategy": "predictive_entropy"}, "model"),  # a model strategy needs a model
        ({"strategy": "bald", "model": "m"}, "model"),  # no version of m has BALD scores
        ({"strategy": "random"}, "strategy"),  # no random scores stored
        ({"strategy": "predictive_entropy", "model": "nope"}, "model"),
    ]
    for body, field in refused:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["field"] == field, (body, response.json())
        assert _priorities() == before, body  # nothing changed (it used to set every task to -1)

    # The newer version has no scores: the queue reads the older one's.
    response = client.post(url, {"strategy": "predictive_entropy", "model": "m"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"changed": 4, "model_version": older.pk}
    assert _priorities() == {s.pk: v for s, v in zip(scans, (0.2, 0.9, 0.5, 0.1), strict=True)}
    assert task_next(project=project, user=ann, stages=("annotate",)).finding.scan_id == scans[1].pk
    listed = client.get(
        reverse("active-learning", args=[project.slug]), {"strategy": "predictive_entropy", "model": "m"}
    ).json()
    assert [r["scan_id"] for r in listed] == [scans[i].pk for i in (1, 2, 0, 3)]
    assert {r["model_version_id"] for r in listed} == {older.pk}

    # power_: the seeded noisy ranking of those scores, as places (n - k) / n.
    response = client.post(
        url, {"strategy": "power_predictive_entropy", "model": "m", "seed": 3}, format="json"
    )
    assert response.status_code == 200, response.content
    order = [
        r.scan_id for r in ranked(project=project, strategy="power_predictive_entropy", version=older, seed=3)
    ]
    assert _priorities() == {scan_id: (4 - k) / 4 for k, scan_id in enumerate(order)}


def test_foreground_aware_random_draws_more_patches_where_the_scans_have_foreground(
    project, queue, api_client
):
    scans, manager, _ = queue
    masks = {}
    for scan in (scans[0], scans[2]):  # region proposals (the lungs) on two of the four scans
        hu = scan_volume(scan)
        masks[scan.pk] = (hu < -500) & (hu > -990)
        _store(scan, "lungs", {}, [Region(label="lung", mask=masks[scan.pk], code="lung")], None, None)
    with_fg = set(masks)
    counts = {True: 0, False: 0}
    for seed in range(5):
        patches: dict[int, list[dict]] = {}
        rows = scores_compute(
            project=project, strategy="foreground_aware_random", params={"seed": seed}, patches=patches
        )
        assert len(rows) == 4 and all(0 <= r.score < 1 for r in rows)
        n = sum(len(v) for v in patches.values())
        assert n == 12  # three per scan by default
        for scan_id, drawn in patches.items():
            counts[scan_id in with_fg] += len(drawn)
            score = next(r.score for r in rows if r.scan_id == scan_id)
            assert len(drawn) <= score * (n + 1) < len(drawn) + 1  # the score is the share of the patches
            for p in drawn:
                centre = tuple(p["centre"])
                assert all(0 <= c < s for c, s in zip(centre, scan.shape[:3], strict=True))
                if scan_id not in with_fg:
                    assert p["kind"] == "random"
                elif p["kind"] in ("inside", "border"):
                    assert masks[scan_id][centre] and p["label"] == 1
        again: dict[int, list[dict]] = {}
        scores_compute(
            project=project, strategy="foreground_aware_random", params={"seed": seed}, patches=again
        )
        assert again == patches  # seeded
    # A visit to a scan without foreground gives a patch only when the kind drawn is random (1/3).
    assert counts[True] > 2 * counts[False], counts

    # Over the API: a job whose result names the patches.
    client = api_client(manager)
    response = client.post(
        reverse("active-learning", args=[project.slug]),
        {"strategy": "foreground_aware_random", "params": {"seed": 1, "patches": 8}},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job_id"])
    assert job.status == "succeeded", job.message
    assert sum(len(v) for v in job.result["patches"].values()) == 8
    assert (
        client.post(
            reverse("active-learning", args=[project.slug]), {"strategy": "power_random"}, format="json"
        ).status_code
        == 400
    )


def test_pool_allocation_follows_nnactive_visits():
    """Pure: cases visited in a seeded cycle; a case without foreground gets a patch only on random kinds."""
    drawn = foreground_aware_allocation({"a": True, "b": False}, n=3000, seed=1)
    assert len(drawn["a"]) + len(drawn["b"]) == 3000
    assert set(drawn["b"]) == {"random"}
    assert 0.72 < len(drawn["a"]) / 3000 < 0.78  # visits alternate: a always, b one time in three
    assert foreground_aware_allocation({"a": True, "b": False}, n=50, seed=4) == foreground_aware_allocation(
        {"a": True, "b": False}, n=50, seed=4
    )
    assert foreground_aware_allocation({"a": False}, n=5, p_random=0.0) == {"a": []}
    with pytest.raises(ValueError, match="^p_random"):
        foreground_aware_allocation({"a": True}, n=1, p_random=-1)
    assert np.isclose(
        sum(k == "random" for k in foreground_aware_allocation({"a": True}, n=3000, seed=2)["a"]) / 3000,
        0.33,
        atol=0.03,
    )

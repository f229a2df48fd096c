"""Several readers per finding: N readings per finding made with it (the task waits in stage read), a
readers' queue that never gives one reading to two people nor one finding twice to one reader, blinded
readings (a reader sees the proposal and their own versions only), the consensus after the last reading
(majority vote or STAPLE, voxel-exact), the agreement (equal to annotation.agreement's), a radiologist's
confirmation (the API: test_readers_api.py)."""

import datetime as dt

import numpy as np
import pytest
from django.utils import timezone

from annotation import agreement as ag
from annotation.models import Annotation, Finding, HistoryEvent, Reading, ReviewTask
from annotation.readers import (
    project_agreement,
    reading_next,
    reading_save,
    reading_submit,
    version_mask,
)
from annotation.services import (
    Conflict,
    LeaseError,
    ReviewError,
    annotation_save,
    finding_create,
    task_approve,
    task_assign,
    task_claim,
    task_next,
    task_return,
    task_submit,
)
from tests.annotation import readers_case
from tests.annotation.factories import review_case
from tests.annotation.readers_case import REPORT, box_mask, readers_project

ANNOTATE, REVIEWING = ("annotate",), ("review", "qa")
people = readers_case.people  # the readers, a radiologist, a researcher and a manager


@pytest.fixture
def case3(project, tmp_path):
    """Three readers per finding (majority vote); a CT with two present findings, no region proposals."""
    readers_project(project, 3)
    scan = review_case(project, tmp_path, findings=REPORT)
    assert Finding.objects.count() >= 2
    return scan


def _read(project, user, decision: str, mask: np.ndarray | None = None) -> Reading:
    """``user`` takes their next reading, saves ``mask`` (when given) and submits ``decision``."""
    reading = reading_next(project=project, user=user)
    assert reading is not None
    if mask is not None:
        current = reading.annotation.version if reading.annotation_id else 0
        if not reading.annotation_id and reading.finding.annotations.filter(version=1, author=None).exists():
            current = 1
        reading_save(reading_id=reading.pk, user=user, base_version=current, kind="mask", mask=mask)
    return reading_submit(reading_id=reading.pk, user=user, decision=decision)


def test_findings_from_proposals_open_n_readings_and_the_task_waits(project, case3, people):
    for finding in Finding.objects.all():
        readings = list(finding.readings.order_by("index"))
        assert [r.index for r in readings] == [1, 2, 3]
        assert all(r.reader is None and r.status == "open" and r.annotation is None for r in readings)
        assert finding.task.stage == "read" and finding.task.assignee is None
        assert HistoryEvent.objects.filter(finding=finding, action="readings_opened").count() == 1
    assert task_next(project=project, user=people["ann1"], stages=ANNOTATE) is None  # not in annotate queue
    task = Finding.objects.first().task
    with pytest.raises(ReviewError, match="^stage: the task is in stage read"):
        task_claim(task_id=task.pk, user=people["ann1"], stages=ANNOTATE)
    with pytest.raises(ReviewError, match="^stage: the finding is with its readers"):
        task_assign(task_id=task.pk, manager=people["boss"], assignee=people["ann1"])


def test_readers_get_different_readings_never_one_finding_twice(project, case3, people):
    first, second = Finding.objects.order_by("id")[:2]
    got = {
        name: reading_next(project=project, user=people[name]) for name in ("ann1", "ann2", "ann3", "ann4")
    }
    assert [(got[n].finding_id, got[n].index) for n in ("ann1", "ann2", "ann3")] == [
        (first.pk, 1),
        (first.pk, 2),
        (first.pk, 3),
    ]
    assert (got["ann4"].finding_id, got["ann4"].index) == (second.pk, 1)
    assert reading_next(project=project, user=people["ann1"]).pk == got["ann1"].pk  # resumes its own
    assert HistoryEvent.objects.filter(action="reading_claimed", user=people["ann1"]).count() == 1

    # Everyone reads until nothing is left: three different readers per finding, one finding once each.
    seen: dict[int, list[int]] = {}
    for _ in range(20):
        progressed = False
        for name in ("ann1", "ann2", "ann3", "ann4"):
            reading = reading_next(project=project, user=people[name])
            if reading is not None:
                seen.setdefault(reading.finding_id, []).append(people[name].pk)
                reading_submit(reading_id=reading.pk, user=people[name], decision="reject")
                progressed = True
        if not progressed:
            break
    assert set(seen) == set(Finding.objects.values_list("pk", flat=True))
    for readers in seen.values():
        assert len(readers) == 3 and len(set(readers)) == 3
    assert not Reading.objects.filter(status="open").exists()
    assert all(t.stage == "review" for t in ReviewTask.objects.all())


def test_expired_lease_passes_the_reading_on_afresh(project, case3, people):
    shape = tuple(case3.shape)
    mine = reading_next(project=project, user=people["ann1"])
    reading_save(
        reading_id=mine.pk,
        user=people["ann1"],
        base_version=0,
        kind="mask",
        mask=box_mask(shape, slice(2, 6), slice(2, 6), slice(1, 3)),
    )
    reading_next(project=project, user=people["ann2"])
    reading_next(project=project, user=people["ann3"])
    Reading.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(LeaseError, match="^lease: your lease on this reading expired"):
        reading_submit(reading_id=mine.pk, user=people["ann1"], decision="reject")
    taken = reading_next(project=project, user=people["ann4"])
    assert taken.pk == mine.pk and taken.reader == people["ann4"] and taken.annotation is None
    with pytest.raises(LeaseError, match="^lease: this reading is not held by you"):
        reading_submit(reading_id=mine.pk, user=people["ann1"], decision="reject")
    # ann4 starts from version 0 although the finding's newest version is ann1's.
    with pytest.raises(ReviewError, match="^decision: an empty annotation cannot be accepted"):
        reading_submit(reading_id=mine.pk, user=people["ann4"], decision="accept")
    with pytest.raises(Conflict) as stale:
        reading_save(
            reading_id=mine.pk, user=people["ann4"], base_version=1, kind="box", box=[1, 1, 1, 4, 4, 2]
        )
    assert stale.value.current is None and stale.value.yours == 1


def test_consensus_by_majority_vote_agreement_and_radiologist_approval(project, case3, people):
    shape = tuple(case3.shape)
    m1 = box_mask(shape, slice(2, 10), slice(2, 10), slice(1, 3))
    m2 = box_mask(shape, slice(6, 14), slice(2, 10), slice(1, 3))  # overlaps m1 on [6:10]
    m3 = box_mask(shape, slice(30, 40), slice(30, 40), slice(4, 6))  # overlaps nobody
    r1 = _read(project, people["ann1"], "accept", m1)
    finding = Finding.objects.get(pk=r1.finding_id)
    r2 = _read(project, people["ann2"], "accept", m2)
    assert ReviewTask.objects.get(finding=finding).stage == "read"  # not before the last reading
    r3 = _read(project, people["ann3"], "accept", m3)
    assert r2.finding_id == r3.finding_id == finding.pk

    finding.refresh_from_db()
    task = ReviewTask.objects.get(finding=finding)
    assert task.stage == "review" and task.annotated_by is None and task.decision == "accept"
    consensus = finding.annotations.get(version=finding.current_version)
    assert consensus.author is None and consensus.comment == "consensus of 3 readers (majority)"
    got = version_mask(consensus, shape)
    assert np.array_equal(got, box_mask(shape, slice(6, 10), slice(2, 10), slice(1, 3)))
    assert np.array_equal(got, ag.majority_vote([m1, m2, m3])) and consensus.voxels == got.sum()
    assert consensus.box == [6, 2, 1, 10, 10, 3]
    # Every reader's version is kept, authored by them.
    authors = set(finding.annotations.exclude(pk=consensus.pk).values_list("author__username", flat=True))
    assert authors == {"ann1", "ann2", "ann3"}

    a = finding.agreement
    masks = {r1.pk: m1, r2.pk: m2, r3.pk: m3}
    dice, iou = ag.pairwise(masks, "dice"), ag.pairwise(masks, "iou")
    assert {tuple(p["readings"]): p["dice"] for p in a["pairs"]} == pytest.approx(dice)
    assert {tuple(p["readings"]): p["iou"] for p in a["pairs"]} == pytest.approx(iou)
    assert a["mean_dice"] == pytest.approx(np.mean(list(dice.values())))
    assert a["mean_iou"] == pytest.approx(np.mean(list(iou.values())))
    per = ag.per_reader(masks, "dice")
    assert {r["reading"]: r["dice"] for r in a["readers"]} == pytest.approx(per)
    assert a["decisions"] == {"accept": 3, "reject": 0} and a["decision_agreement"] == 1.0
    assert a["consensus_version"] == consensus.version and a["method"] == "majority"
    event = HistoryEvent.objects.get(finding=finding, action="consensus")
    assert event.before["stage"] == "read" and event.after["stage"] == "review"
    assert event.after["agreement"]["mean_dice"] == a["mean_dice"]

    review = task_next(project=project, user=people["rad"], stages=REVIEWING)
    assert review.pk == task.pk
    done = task_approve(task_id=task.pk, user=people["rad"])
    assert done.stage == "accepted" and Finding.objects.get(pk=finding.pk).status == "accepted"


def test_consensus_by_staple(project, tmp_path, people):
    readers_project(project, 3, "staple")
    scan = review_case(project, tmp_path, findings=REPORT)
    shape = tuple(scan.shape)
    m1 = box_mask(shape, slice(2, 12), slice(2, 12), slice(1, 4))
    m2 = box_mask(shape, slice(4, 12), slice(2, 12), slice(1, 4))
    m3 = box_mask(shape, slice(4, 14), slice(4, 14), slice(2, 5))
    readings = [_read(project, people[n], "accept", m) for n, m in (("ann1", m1), ("ann2", m2), ("ann3", m3))]
    finding = Finding.objects.get(pk=readings[0].finding_id)
    consensus = finding.annotations.get(version=finding.current_version)
    assert consensus.comment == "consensus of 3 readers (staple)"
    probability, params = ag.staple([m1, m2, m3])
    assert np.array_equal(version_mask(consensus, shape), probability >= 0.5)
    stored = {r["reading"]: r["staple"] for r in finding.agreement["readers"]}
    assert [stored[r.pk]["sensitivity"] for r in readings] == pytest.approx(params["sensitivity"])
    assert [stored[r.pk]["specificity"] for r in readings] == pytest.approx(params["specificity"])


def test_majority_rejects_and_a_return_goes_to_the_annotate_queue(project, case3, people):
    shape = tuple(case3.shape)
    first = _read(project, people["ann1"], "reject")
    _read(project, people["ann2"], "accept", box_mask(shape, slice(2, 6), slice(2, 6), slice(1, 3)))
    _read(project, people["ann3"], "reject")
    finding = Finding.objects.get(pk=first.finding_id)
    task = finding.task
    assert task.stage == "review" and task.decision == "reject"
    assert finding.agreement["consensus_version"] is None and finding.agreement["pairs"] == []
    assert finding.agreement["decision_agreement"] == pytest.approx(1 / 3)  # 1 of 3 pairs agree
    assert not finding.annotations.filter(author=None).exists()  # no consensus mask for a rejection

    # Returned: one annotator corrects it on top of the newest version, as with one reader.
    task_next(project=project, user=people["rad"], stages=REVIEWING)
    task_return(task_id=task.pk, user=people["rad"], comment="It is there: draw it")
    fix = task_next(project=project, user=people["ann4"], stages=ANNOTATE)
    assert fix.pk == task.pk and fix.returned_comment == "It is there: draw it"
    annotation_save(
        task_id=task.pk,
        user=people["ann4"],
        base_version=fix.finding.current_version,
        kind="mask",
        mask=box_mask(shape, slice(2, 8), slice(2, 8), slice(1, 3)),
    )
    task_submit(task_id=task.pk, user=people["ann4"], decision="accept")
    task_next(project=project, user=people["rad"], stages=REVIEWING)
    assert task_approve(task_id=task.pk, user=people["rad"]).stage == "accepted"


def test_two_readers_tie_accepts_and_cohen_kappa(project, tmp_path, people):
    readers_project(project, 2)
    scan = review_case(project, tmp_path, findings=REPORT)
    shape = tuple(scan.shape)
    m1 = box_mask(shape, slice(2, 10), slice(2, 10), slice(1, 3))
    m2 = box_mask(shape, slice(4, 12), slice(2, 10), slice(1, 3))
    findings = list(Finding.objects.order_by("id"))
    plan = [("accept", m1, "reject", None)] + [("accept", m1, "accept", m2)] * (len(findings) - 1)
    for d1, k1, d2, k2 in plan:
        _read(project, people["ann1"], d1, k1)
        _read(project, people["ann2"], d2, k2)
    tie = Finding.objects.get(pk=findings[0].pk)
    assert tie.agreement["tie"] and tie.agreement["decision"] == "accept"
    only = tie.annotations.get(version=tie.current_version)
    assert only.comment == "consensus of 2 readers (majority)" and np.array_equal(
        version_mask(only, shape), m1
    )
    both = Finding.objects.get(pk=findings[1].pk)
    assert np.array_equal(version_mask(both.annotations.get(version=both.current_version), shape), m1 | m2)

    summary = project_agreement(project)
    decisions = [(d1, d2) for d1, _, d2, _ in plan]
    assert summary["project"]["cohen_kappa"] == pytest.approx(
        ag.cohen_kappa([d[0] for d in decisions], [d[1] for d in decisions])
    )
    assert summary["project"]["fleiss_kappa"] == pytest.approx(ag.fleiss_kappa([list(d) for d in decisions]))
    per = {a["username"]: a for a in summary["annotators"]}
    assert per["ann1"]["findings"] == len(findings) and per["ann1"]["accepted"] == len(findings)
    assert per["ann2"]["accepted"] == len(findings) - 1
    assert per["ann1"]["mean_dice"] == pytest.approx(ag.dice(m1, m2))
    assert per["ann2"]["compared"] == len(findings) - 1


def test_a_finding_added_by_hand_is_read_too(project, case3, people):
    task = finding_create(
        project=project, user=people["ann1"], study=case3.study, scan=case3, text="a second nodule", code="1a"
    )
    task.refresh_from_db()
    assert task.stage == "read" and task.assignee is None
    readings = list(task.finding.readings.order_by("index"))
    assert readings[0].reader == people["ann1"] and readings[0].lease_expires_at is not None
    assert reading_next(project=project, user=people["ann1"]).pk == readings[0].pk  # the author's own


def test_one_reader_projects_are_unchanged(project, tmp_path, people):
    scan = review_case(project, tmp_path, findings=REPORT)
    assert project.readers_per_finding == 1 and not Reading.objects.exists()
    assert all(t.stage == "annotate" for t in ReviewTask.objects.all())
    assert reading_next(project=project, user=people["ann1"]) is None
    task = task_next(project=project, user=people["ann1"], stages=ANNOTATE)
    annotation_save(
        task_id=task.pk,
        user=people["ann1"],
        base_version=task.finding.current_version,
        kind="mask",
        mask=box_mask(tuple(scan.shape), slice(2, 6), slice(2, 6), slice(1, 3)),
    )
    assert task_submit(task_id=task.pk, user=people["ann1"], decision="accept").stage == "review"
    assert Annotation.objects.filter(author=None).count() == 0
    assert project_agreement(project)["project"]["findings"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_readers_on_postgresql(postgres, project, tmp_path, people):
    """At once: three readers never get one reading, and of two last submits exactly one makes the
    consensus (the submits of one finding take turns on its task row)."""
    import threading

    from django.db import connection

    readers_project(project, 3)
    review_case(project, tmp_path, findings=REPORT)
    names = ("ann1", "ann2", "ann3")
    barrier, got, errors = threading.Barrier(len(names)), {}, []

    def run(name, action):
        try:
            barrier.wait(timeout=10)
            got[name] = action(name)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def start(action):
        threads = [threading.Thread(target=run, args=(n, action)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors

    start(lambda n: reading_next(project=project, user=people[n]))
    assert len({got[n].pk for n in names}) == 3
    assert len({got[n].finding_id for n in names}) == 1  # the first finding's three readings
    readings = dict(got)
    start(lambda n: reading_submit(reading_id=readings[n].pk, user=people[n], decision="reject"))
    finding = Finding.objects.get(pk=readings["ann1"].finding_id)
    assert finding.task.stage == "review" and finding.agreement["decisions"] == {"accept": 0, "reject": 3}
    assert HistoryEvent.objects.filter(finding=finding, action="consensus").count() == 1


def test_a_release_reports_the_readers_agreement(project, case3, people):
    from releases.services import dataset_create, release_create, release_manifest

    shape = tuple(case3.shape)
    m1 = box_mask(shape, slice(2, 10), slice(2, 10), slice(1, 3))
    m2 = box_mask(shape, slice(4, 10), slice(2, 10), slice(1, 3))
    for user, mask in (("ann1", m1), ("ann2", m2), ("ann3", m1)):
        reading = _read(project, people[user], "accept", mask)
    task = ReviewTask.objects.get(finding_id=reading.finding_id)
    task_next(project=project, user=people["rad"], stages=REVIEWING)
    task_approve(task_id=task.pk, user=people["rad"])
    release = release_create(dataset=dataset_create(slug="read3", name="Three readers", projects=[project]))
    [case] = release_manifest(release)["cases"]
    [label] = case["labels"]
    readers = label["provenance"]["readers"]
    agreement = Finding.objects.get(pk=reading.finding_id).agreement
    assert readers["readers"] == 3 and readers["mean_dice"] == pytest.approx(agreement["mean_dice"])
    assert "read independently by 3 readers, then merged (majority consensus)" in release.card
    assert f"mean pairwise Dice {agreement['mean_dice']:.3f}" in release.card

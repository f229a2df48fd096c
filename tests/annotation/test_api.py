"""Review API: roles per action, the queue, a case payload, mask/box saves with 409 on a stale version
or a lease not held, return with a comment the annotator sees, approval, history per finding and user,
researchers see accepted findings only, other projects 404."""

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from django.urls import reverse

from annotation.models import Finding
from core.models import Role
from core.services import membership_set
from tests.annotation.test_review import case  # noqa: F401 - fixture


@pytest.fixture
def users(make_user, project):
    out = {}
    for name, role in (
        ("ann", Role.ANNOTATOR),
        ("rad", Role.RADIOLOGIST),
        ("res", Role.RESEARCHER),
        ("boss", Role.MANAGER),
    ):
        out[name] = make_user(name)
        membership_set(project=project, user=out[name], role=role)
    return out


def _nifti(mask, affine):
    return io.BytesIO(gzip.compress(nib.Nifti1Image(mask.astype(np.uint8), affine).to_bytes()))


def test_review_over_the_api(project, case, users, outsider, api_client):  # noqa: F811
    ann, rad, res = api_client(users["ann"]), api_client(users["rad"]), api_client(users["res"])
    assert ann.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).status_code == 403
    opened = ann.get(reverse("next-task", args=[project.slug]), {"stage": "annotate"})
    assert opened.status_code == 200
    body = opened.json()
    task_id, finding = body["task"]["id"], body["finding"]
    assert body["report"]["sections"]["findings"][finding["start"] : finding["end"]] == finding["text"]
    assert len(body["findings"]) >= 2 and body["scan"]["shape"] == case.shape

    mask = np.zeros(tuple(case.shape), bool)
    mask[4:12, 4:12, 1:4] = True
    upload = _nifti(mask, np.asarray(case.affine))
    upload.name = "edit.nii.gz"
    saved = ann.post(
        reverse("task-annotations", args=[task_id]),
        {"base_version": finding["current_version"], "kind": "mask", "mask": upload},
        format="multipart",
    )
    assert saved.status_code == 201, saved.content
    version = saved.json()["version"]
    stale = ann.post(
        reverse("task-annotations", args=[task_id]),
        {"base_version": version - 1, "kind": "box", "box": [0, 0, 0, 4, 4, 2]},
        format="json",
    )
    assert (
        stale.status_code == 409
        and stale.json()["current"]["version"] == version
        and stale.json()["yours"] == version - 1
    )
    wrong = _nifti(mask[:-2], np.eye(4))
    wrong.name = "small.nii.gz"
    bad = ann.post(
        reverse("task-annotations", args=[task_id]),
        {"base_version": version, "kind": "mask", "mask": wrong},
        format="multipart",
    )
    assert bad.status_code == 400 and "shape" in bad.json()["mask"]
    junk = io.BytesIO(b"nonsense")
    junk.name = "junk.bin"
    assert (
        "junk.bin"
        in ann.post(
            reverse("task-annotations", args=[task_id]),
            {"base_version": version, "kind": "mask", "mask": junk},
            format="multipart",
        ).json()["mask"]
    )
    mask_file = api_client(users["ann"]).get(reverse("annotation-mask", args=[saved.json()["id"]]))
    assert np.array_equal(
        np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(b"".join(mask_file.streaming_content))).dataobj)
        > 0,
        mask,
    )

    assert (
        ann.post(reverse("task-submit", args=[task_id]), {"decision": "accept"}, format="json").status_code
        == 200
    )
    lease = ann.post(reverse("task-submit", args=[task_id]), {"decision": "accept"}, format="json")
    assert lease.status_code == 400 and "stage" in lease.json()
    review = rad.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).json()
    assert review["task"]["id"] == task_id
    assert rad.post(reverse("task-return", args=[task_id]), {}, format="json").status_code == 400
    assert (
        rad.post(reverse("task-return", args=[task_id]), {"comment": "Too small"}, format="json").status_code
        == 200
    )
    again = ann.get(reverse("next-task", args=[project.slug]), {"stage": "annotate"}).json()
    assert again["task"]["id"] == task_id and again["task"]["returned_comment"] == "Too small"
    ann.post(
        reverse("task-submit", args=[task_id]), {"decision": "accept", "comment": "bigger now"}, format="json"
    )
    rad.get(reverse("next-task", args=[project.slug]), {"stage": "review"})
    approved = rad.post(reverse("task-approve", args=[task_id]), {}, format="json").json()
    assert approved["stage"] == "accepted"

    history = ann.get(reverse("history-list"), {"finding": finding["id"]}).json()["results"]
    assert [h["action"] for h in history][-1] == "approved" and any(
        h["comment"] == "Too small" for h in history
    )
    mine = ann.get(reverse("history-list"), {"user": "rad"}).json()["results"]
    assert {h["action"] for h in mine} >= {"claimed", "returned", "approved"}
    seen = res.get(reverse("finding-list")).json()["results"]
    assert [f["id"] for f in seen] == [finding["id"]] and Finding.objects.count() > 1
    assert api_client(outsider).get(reverse("task-detail", args=[task_id])).status_code == 404
    assert api_client(outsider).get(reverse("finding-list")).json()["count"] == 0
    boss = api_client(users["boss"])
    other = Finding.objects.exclude(pk=finding["id"]).first().task
    assigned = boss.post(reverse("task-assign", args=[other.pk]), {"user": "ann"}, format="json").json()
    assert assigned["assignee"] == "ann"
    assert (
        ann.post(reverse("task-assign", args=[other.pk]), {"user": "ann"}, format="json").status_code == 403
    )


def test_claim_a_named_task_and_add_a_missing_finding(project, case, users, api_client):  # noqa: F811
    ann, rad = api_client(users["ann"]), api_client(users["rad"])
    other_ann = api_client(users["boss"])  # managers annotate too
    first = ann.get(reverse("next-task", args=[project.slug]), {"stage": "annotate"}).json()
    sibling = next(f for f in first["findings"] if f["id"] != first["finding"]["id"])
    assert sibling["task_id"] and first["scan"]["ndim"] == 3 and first["gaze"] == []

    # The findings list: open another finding's task; someone else's live lease is a 409 naming it.
    switched = ann.post(reverse("task-claim", args=[sibling["task_id"]]))
    assert switched.status_code == 200 and switched.json()["finding"]["id"] == sibling["id"]
    assert ann.post(reverse("task-claim", args=[sibling["task_id"]])).status_code == 200  # yours already
    held = other_ann.post(reverse("task-claim", args=[sibling["task_id"]]))
    assert held.status_code == 409 and "another reviewer" in held.json()["lease"]
    assert rad.post(reverse("task-claim", args=[sibling["task_id"]])).status_code == 403

    # A finding the proposals missed, with its span in the report.
    text = case.study.reports.get().findings
    start = text.index("Small left")
    made = ann.post(
        reverse("finding-create", args=[project.slug]),
        {
            "study_id": case.study_id,
            "scan_id": case.pk,
            "text": "small left pleural effusion",
            "code": "2e",
            "section": "findings",
            "start": start,
            "end": len(text),
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["finding"]["source"] == "manual" and body["task"]["assignee"] == "ann"
    assert body["task"]["stage"] == "annotate" and body["finding"]["current_version"] == 0
    history = ann.get(reverse("history-list"), {"finding": body["finding"]["id"]}).json()["results"]
    assert [h["action"] for h in history] == ["created"]

    bad_span = ann.post(
        reverse("finding-create", args=[project.slug]),
        {"study_id": case.study_id, "text": "x", "section": "findings", "start": 5, "end": 10_000},
        format="json",
    )
    assert bad_span.status_code == 400 and "start" in bad_span.json()
    empty = ann.post(
        reverse("finding-create", args=[project.slug]),
        {"study_id": case.study_id, "text": " "},
        format="json",
    )
    assert empty.status_code == 400 and "text" in empty.json()
    missing = ann.post(
        reverse("finding-create", args=[project.slug]), {"study_id": 99999, "text": "x"}, format="json"
    )
    assert missing.status_code == 400 and "99999" in missing.json()["study_id"]
    assert (
        rad.post(
            reverse("finding-create", args=[project.slug]),
            {"study_id": case.study_id, "text": "x"},
            format="json",
        ).status_code
        == 403
    )

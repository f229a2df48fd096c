"""Several readers per finding over the API: blinded readings (a reader sees the proposal and their own
versions only, never another reader's), saves and submits, the consensus and the agreement as the
radiologist and a researcher see them."""

import gzip

import nibabel as nib
import numpy as np
import pytest
from django.urls import reverse

from annotation import agreement as ag
from annotation.models import Finding
from annotation.readers import version_mask
from annotation.services import findings_from_proposals
from ml.preannotate import preannotate
from tests.annotation import readers_case
from tests.annotation.factories import review_case
from tests.annotation.readers_case import REPORT, box_mask, readers_project

people = readers_case.people  # the readers, a radiologist, a researcher and a manager


def test_readings_over_the_api_blinded(project, tmp_path, people, api_client, outsider):
    """A proposal's mask as version 1: every reader sees it and their own versions, never another's."""
    readers_project(project, 3)
    scan = review_case(project, tmp_path, findings=REPORT)
    Finding.objects.all().delete()
    for p in preannotate(scan=scan, generator="lungs").proposals:
        p.code = "2e"
        p.save()
    assert findings_from_proposals(project=project) >= 1
    Finding.objects.exclude(code="2e").delete()  # the nodule: no proposal of its own
    finding = Finding.objects.get(code="2e")
    assert finding.current_version == 1 and finding.readings.count() == 3
    shape = tuple(scan.shape)
    c1, c2, c3 = (api_client(people[n]) for n in ("ann1", "ann2", "ann3"))
    rad, res = api_client(people["rad"]), api_client(people["res"])
    url = reverse("next-reading", args=[project.slug])
    assert rad.get(url).status_code == 403 and api_client(outsider).get(url).status_code == 404

    one = c1.get(url).json()
    rid1 = one["reading"]["id"]
    assert [v["version"] for v in one["versions"]] == [1] and one["finding"]["current_version"] == 1
    assert one["task"]["stage"] == "read" and one["reading"]["reader"] == "ann1"
    m1 = box_mask(shape, slice(10, 20), slice(10, 20), slice(2, 4))
    upload = gzip.compress(nib.Nifti1Image(m1.astype(np.uint8), np.asarray(scan.affine)).to_bytes())
    saved = c1.post(
        reverse("reading-annotations", args=[rid1]),
        {"base_version": 1, "kind": "mask", "mask": _file(upload, "m1.nii.gz")},
        format="multipart",
    )
    assert saved.status_code == 201, saved.content
    mine = saved.json()
    assert mine["version"] == 2 and mine["author"] == "ann1" and mine["parent_id"] == one["versions"][0]["id"]

    two = c2.get(url).json()
    rid2 = two["reading"]["id"]
    assert rid2 != rid1 and two["finding"]["id"] == finding.pk
    assert [v["version"] for v in two["versions"]] == [1] and two["finding"]["current_version"] == 1
    assert all(v["author"] != "ann1" for v in two["versions"])
    assert c2.get(reverse("annotation-mask", args=[mine["id"]])).status_code == 404  # not yours, yet
    assert rad.get(reverse("annotation-mask", args=[mine["id"]])).status_code == 404
    assert c1.get(reverse("annotation-mask", args=[mine["id"]])).status_code == 200
    detail = c2.get(reverse("task-detail", args=[finding.task.pk])).json()
    assert [v["version"] for v in detail["versions"]] == [1]
    assert c2.get(reverse("reading-detail", args=[rid1])).status_code == 404
    assert [v["version"] for v in c1.get(reverse("reading-detail", args=[rid1])).json()["versions"]] == [1, 2]

    # ann2 edits from version 1: ann1's save is no conflict for them; a stale base is, showing only theirs.
    box = c2.post(
        reverse("reading-annotations", args=[rid2]),
        {"base_version": 1, "kind": "box", "box": [12, 12, 2, 22, 20, 4]},
        format="json",
    )
    assert box.status_code == 201 and box.json()["version"] == 3
    stale = c2.post(
        reverse("reading-annotations", args=[rid2]),
        {"base_version": 1, "kind": "box", "box": [12, 12, 2, 22, 20, 4]},
        format="json",
    )
    assert stale.status_code == 409 and stale.json()["current"]["version"] == 3 and stale.json()["yours"] == 1
    bad = c2.post(
        reverse("reading-annotations", args=[rid2]),
        {"base_version": 3, "kind": "box", "box": [0, 0, 0, 999, 4, 2]},
        format="json",
    )
    assert bad.status_code == 400 and "axis 0" in bad.json()["box"]
    # another's reading does not exist for you (blinding: annotation.selectors), so submitting it is 404
    assert (
        c2.post(reverse("reading-submit", args=[rid1]), {"decision": "accept"}, format="json").status_code
        == 404
    )
    assert "decision" in c2.post(reverse("reading-submit", args=[rid2]), {}, format="json").json()
    submitted = c2.post(reverse("reading-submit", args=[rid2]), {"decision": "accept"}, format="json")
    assert submitted.status_code == 200 and submitted.json()["status"] == "submitted"
    assert submitted.json()["version"] == 3 and submitted.json()["stage"] == "read"
    again = c2.post(reverse("reading-submit", args=[rid2]), {"decision": "accept"}, format="json")
    assert again.status_code == 400 and "already submitted" in again.json()["status"]
    assert c2.get(url).status_code == 204  # ann2 read the only finding

    three = c3.get(url).json()
    assert [v["version"] for v in three["versions"]] == [1]  # neither ann1's nor ann2's work
    c3.post(reverse("reading-submit", args=[three["reading"]["id"]]), {"decision": "accept"}, format="json")
    last = c1.post(reverse("reading-submit", args=[rid1]), {"decision": "accept"}, format="json").json()
    assert last["stage"] == "review"

    finding.refresh_from_db()
    proposal = version_mask(finding.annotations.get(version=1), shape)
    boxed = box_mask(shape, slice(12, 22), slice(12, 20), slice(2, 4))
    masks = [m1, boxed, proposal]  # ann1's mask, ann2's box, ann3 accepted the proposal as it was
    consensus = finding.annotations.get(version=finding.current_version)
    assert consensus.version == 4 and np.array_equal(version_mask(consensus, shape), ag.majority_vote(masks))
    review = rad.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).json()
    assert review["task"]["id"] == finding.task.pk
    assert {v["version"] for v in review["versions"]} == {1, 2, 3, 4}  # the radiologist sees everyone's
    assert review["agreement"]["consensus_version"] == 4 and three["agreement"] is None
    assert (
        rad.post(reverse("task-approve", args=[finding.task.pk]), {}, format="json").json()["stage"]
        == "accepted"
    )

    agreement_url = reverse("project-agreement", args=[project.slug])
    assert c1.get(agreement_url).status_code == 403
    body = rad.get(agreement_url).json()
    row = body["findings"][0]
    assert row["finding"] == finding.pk and row["decisions"] == {"accept": 3, "reject": 0}
    assert sorted(r["index"] for r in row["readers"]) == [1, 2, 3]
    by_user = {r["username"]: r for r in row["readers"]}
    named = {"ann1": m1, "ann2": boxed, "ann3": proposal}
    per = ag.per_reader(named, "dice")
    assert {u: by_user[u]["dice"] for u in named} == pytest.approx(per)
    assert body["project"]["fleiss_kappa"] == 1.0 and body["project"]["findings"] == 1
    assert {a["username"]: a["mean_dice"] for a in body["annotators"]} == pytest.approx(per)
    assert (
        res.get(agreement_url).json()["findings"][0]["finding"] == finding.pk
    )  # accepted: researchers see it
    assert "/api/projects/{slug}/next-reading/" in c1.get("/api/schema/").content.decode()


def _file(data: bytes, name: str):
    import io

    out = io.BytesIO(data)
    out.name = name
    return out


def _file(data: bytes, name: str):
    import io

    out = io.BytesIO(data)
    out.name = name
    return out

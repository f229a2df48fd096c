"""Proposals reach the annotator (issue 16 item 3): findings start from the region proposal that fits them
by code, model label, sentence, organ or a lesion overlapping the anatomy of their place, cut to the
components on the finding's side and in its zone; anatomy proposals are the finding's context; findings
already waiting get a start when proposals arrive; the CLI, the API (button) and a finished label run
(project setting) make them. Real lungs generator, real rules labeler, real database and storage."""

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from annotation.models import Annotation, Finding, HistoryEvent, ReviewTask
from annotation.proposals import finding_place, label_codes, organ_of, read_mask
from annotation.readers import version_mask
from annotation.services import findings_made, task_claim
from core.models import Job, Role
from core.services import membership_set
from labeling.services import label_run_execute, label_run_get_or_create
from ml.preannotate import Region, _store, preannotate
from tests.annotation.factories import review_case

REPORT = (
    "There is a 14 mm nodule in the right upper lobe. A 2 cm mass in the left lower lobe. "
    "Small left pleural effusion. Mild emphysema in both upper lobes. No pneumothorax."
)


def test_names_and_places():
    assert [organ_of(n) for n in ("left_lung", "lung_upper_lobe_right", "Right Middle Lobe", "lungs")] == [
        "left_lung",
        "right_upper_lobe",
        "right_middle_lobe",
        "lungs",
    ]
    assert [organ_of(n) for n in ("heart", "trachea", "lesion", "lung_nodules", "left lower")] == [
        "heart",
        "trachea",
        "",
        "",
        "",
    ]
    assert label_codes("lung_nodules") == {"2d", "Lung Lesion"} and label_codes("Pleural-Effusion") >= {"2e"}
    assert label_codes("abnormality") == frozenset()
    place = finding_place(code="2d", text="x", laterality="right", location="right upper lobe", region="L")
    assert (place.organ, place.side, place.part) == ("lungs", "right", "upper")
    assert place.lobe == "right_upper_lobe"
    manual = finding_place(code="", text="Small nodule at the left lung base.")
    assert (manual.organ, manual.side, manual.part) == ("lungs", "left", "lower")
    heart = finding_place(code="Cardiomegaly", text="The heart is enlarged.")
    assert (heart.organ, heart.side) == ("heart", "")


def _ras(scan, voxels: np.ndarray) -> np.ndarray:
    affine = np.asarray(scan.affine, dtype=np.float64)
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def _ball_in(lung: np.ndarray, scan, height: float, radius: int = 2) -> np.ndarray:
    """A small ball of voxels of ``lung`` around the lung voxel nearest its centroid at ``height`` (0: its
    lowest, 1: its highest RAS z)."""
    where = np.argwhere(lung)
    z = _ras(scan, where)[:, 2]
    target = z.min() + height * (z.max() - z.min())
    level = where[np.abs(z - target) <= np.abs(z - target).min() + 1e-6]
    centre = level[np.argmin(np.linalg.norm(level - level.mean(axis=0), axis=1))]
    grid = np.indices(lung.shape).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - centre, axis=-1) <= radius
    return ball & lung


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.mark.django_db
def test_findings_start_from_the_proposal_of_their_place(project, tmp_path, make_user, api_client):
    scan = review_case(project, tmp_path, shape=(20, 64, 64), spacing=(8.0, 6.0, 6.0), findings=REPORT)
    findings = {f.location if f.code == "2d" else f.code: f for f in Finding.objects.all()}
    assert len(findings) == 4
    nodule, mass = findings["right upper lobe"], findings["left lower lobe"]
    effusion, emphysema = findings["2e"], findings["1c"]
    assert all(f.current_version == 0 for f in findings.values())  # no proposal yet

    # Proposals arrive: the lungs generator's anatomy, a lesion model's "lesion" label with one blob in the
    # right upper lung and one in the left lower lung, an unnamed "abnormality" in the left lower lung, a
    # more confident "pneumothorax" there too (names another kind of finding), and a grounding model's
    # mask for the emphysema sentence.
    lungs = {p.label: p for p in preannotate(scan=scan, generator="lungs").proposals}
    right = version_mask_of(lungs["right_lung"], scan)
    left = version_mask_of(lungs["left_lung"], scan)
    rul, lll = _ball_in(right, scan, 0.85), _ball_in(left, scan, 0.15)
    lower_left = _ball_in(left, scan, 0.1, radius=3) & ~lll
    apex = _ball_in(right, scan, 0.95) | _ball_in(left, scan, 0.95)
    stored = _store(
        scan,
        "model:lesions",
        {},
        [
            Region(label="lesion", mask=rul | lll, code="lesion", confidence=0.9),
            Region(label="abnormality", mask=lower_left, code="abnormality", confidence=0.5),
            Region(label="pneumothorax", mask=lower_left | lll, code="pneumothorax", confidence=0.99),
        ],
        None,
        None,
    )
    grounded = _store(
        scan,
        "model:grounding",
        {},
        [Region(label="1c", mask=apex, code="1c", text=emphysema.text)],
        None,
        None,
    )
    lesion, abnormality, pneumothorax = stored

    # The manager's button (the API) gives the waiting findings their starts; a held one waits.
    manager, ann = make_user("m"), make_user("a")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    url = f"/api/projects/{project.slug}/findings/from-proposals/"
    assert api_client(ann).post(url).status_code == 403
    made = api_client(manager).post(url)
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["created"] == 0 and body["attached"] == 4, body
    assert body["rules"] == {"code": 2, "overlap": 1, "text": 1} and body["with_context"] == 4

    def start(finding):
        finding.refresh_from_db()
        v1 = finding.annotations.get(version=1)
        return v1, version_mask(v1, tuple(scan.shape))

    v1, mask = start(nodule)  # "lesion" names a 2d finding: cut to its right upper component
    assert v1.region_proposal_id == lesion.pk and _dice(mask, rul) == 1.0 and v1.voxels == rul.sum()
    v1, mask = start(mass)  # the same proposal, its left lower component
    assert v1.region_proposal_id == lesion.pk and _dice(mask, lll) == 1.0
    v1, mask = start(effusion)  # no 2e proposal: the unnamed lesion in the left lung, not the pneumothorax
    assert v1.region_proposal_id == abnormality.pk and _dice(mask, lower_left) == 1.0
    v1, mask = start(emphysema)  # the grounding model's mask of its own sentence, both sides kept
    assert v1.region_proposal_id == grounded[0].pk and _dice(mask, apex) == 1.0
    event = HistoryEvent.objects.get(finding=nodule, action="proposal_attached")
    assert event.after["start"] == {"proposal": lesion.pk, "rule": "code", "components": [1, 2]}
    assert event.after["context"] == [lungs["right_lung"].pk]
    assert not Annotation.objects.filter(region_proposal=pneumothorax).exists()

    # The case shows the anatomy of the finding's place as layers: the right lung first and shown.
    task = ReviewTask.objects.get(finding=nodule)
    case = api_client(ann).get(f"/api/tasks/{task.pk}/").json()
    assert [(layer["label"], layer["context"]) for layer in case["layers"]] == [
        ("right_lung", True),
        ("left_lung", False),
    ]
    assert case["start"]["rule"] == "code" and case["place"]["lobe"] == "right_upper_lobe"
    both = api_client(ann).get(f"/api/tasks/{ReviewTask.objects.get(finding=emphysema).pk}/").json()
    assert {layer["label"] for layer in both["layers"] if layer["context"]} == {"right_lung", "left_lung"}

    # Again: nothing new. From scratch (the CLI): the same starts, now on new findings.
    assert findings_made(project=project).as_dict()["attached"] == 0
    Finding.objects.all().delete()
    out = StringIO()
    call_command("findings_from_proposals", project.slug, "--json", stdout=out)
    again = json.loads(out.getvalue())
    assert (again["created"], again["started"], again["attached"]) == (4, 4, 0)
    assert again["rules"] == body["rules"]
    nodule = Finding.objects.get(code="2d", location="right upper lobe")
    v1, mask = start(nodule)
    assert v1.region_proposal_id == lesion.pk and _dice(mask, rul) == 1.0
    created = HistoryEvent.objects.get(finding=nodule, action="created")
    assert created.after["start"]["rule"] == "code" and created.after["version"] == 1


def version_mask_of(proposal, scan) -> np.ndarray:
    mask = read_mask(proposal.mask.name)
    assert mask.shape == tuple(scan.shape)
    return mask


@pytest.mark.django_db
def test_a_held_finding_waits_and_a_label_run_makes_findings_by_itself(
    project, tmp_path, make_user, django_capture_on_commit_callbacks
):
    scan = review_case(project, tmp_path, shape=(16, 48, 48), spacing=(8.0, 7.0, 7.0), findings=REPORT)
    ann = make_user("a")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    nodule = Finding.objects.get(code="2d", location="right upper lobe")
    task_claim(task_id=nodule.task.pk, user=ann, stages=("annotate",))
    lungs = {p.label: p for p in preannotate(scan=scan, generator="lungs").proposals}
    right = version_mask_of(lungs["right_lung"], scan)
    nodule_mask = _ball_in(right, scan, 0.8)
    _store(scan, "model:lesions", {}, [Region(label="nodule", mask=nodule_mask, code="nodule")], None, None)
    made = findings_made(project=project)
    assert made.attached == 0 and Finding.objects.get(pk=nodule.pk).current_version == 0  # held: untouched

    # The setting: a finished label run makes its findings (a job on the default queue) with their starts.
    Finding.objects.all().delete()
    project.findings_after_label_run = True
    project.save()
    with django_capture_on_commit_callbacks(execute=True):  # the run resumes: finished again
        run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    job = Job.objects.get(kind="findings_from_proposals")
    assert job.status == "succeeded" and job.params == {"run_id": run.pk}, (job.status, job.errors)
    assert job.result["created"] == 4 and job.result["rules"] == {"code": 1}, job.result
    nodule = Finding.objects.get(code="2d", location="right upper lobe")
    assert nodule.current_version == 1 and nodule.finding_proposal.run_id == run.pk

"""A box never replaces a mask: a finding's current grounding is its newest mask version and its newest box
version (``annotation.versions.groundings``), whatever order they were saved in, and a restore (an old
version saved again) is the newest of its kind. Releases carry both; training, evaluation, the learning
loop and the PACS store-back take the mask; researchers see both versions."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.loop import _accepted
from annotation.models import Annotation, Finding, Stage
from annotation.selectors import annotations_for_user
from annotation.services import annotation_save, task_approve, task_next, task_submit
from annotation.training import accepted_examples
from annotation.versions import groundings, version_mask
from core.models import Role
from core.services import membership_set
from ml.training import TrainingError
from releases.evaluation import finding_cases
from releases.records import LabelRecord
from releases.services import dataset_create, release_cases, release_create, release_manifest
from tests.annotation.factories import review_case

pytestmark = pytest.mark.usefixtures("postgres")

ANNOTATE, REVIEW = (Stage.ANNOTATE,), (Stage.REVIEW, Stage.QA)
BOX = [4, 4, 1, 12, 12, 3]  # [xmin, ymin, zmin, xmax, ymax, zmax], max exclusive


@pytest.fixture
def case(project, tmp_path, make_user):
    scan = review_case(project, tmp_path, findings="There is a 14 mm nodule in the right upper lobe.")
    ann, rad, res = make_user("ann"), make_user("rad"), make_user("res")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    membership_set(project=project, user=res, role=Role.RESEARCHER)
    return scan, ann, rad, res


def a_mask(scan, x0: int) -> np.ndarray:
    mask = np.zeros(tuple(scan.shape), bool)
    mask[x0 : x0 + 6, 20:30, 2:5] = True
    return mask


def grounded(project, scan, ann, rad, steps: list[dict]) -> Finding:
    """The scan's first finding, its versions saved in the order of ``steps``, then accepted."""
    task = task_next(project=project, user=ann, stages=ANNOTATE)
    for step in steps:
        task.finding.refresh_from_db()
        annotation_save(task_id=task.pk, user=ann, base_version=task.finding.current_version, **step)
    task_submit(task_id=task.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=REVIEW).pk, user=rad)
    finding = Finding.objects.select_related("scan").get(pk=task.finding_id)
    assert finding.status == "accepted" and finding.current_version == len(steps)
    return finding


def the_label(project) -> tuple:
    dataset = dataset_create(slug="grounded", name="Grounded", projects=[project])
    release = release_create(dataset=dataset)
    [case] = release_manifest(release)["cases"]
    [label] = case["labels"]
    return release, label


def test_a_box_after_a_mask_keeps_the_mask_everywhere(project, case):
    scan, ann, rad, res = case
    mask = a_mask(scan, 4)
    finding = grounded(project, scan, ann, rad, [{"kind": "mask", "mask": mask}, {"kind": "box", "box": BOX}])
    v1, v2 = finding.annotations.order_by("version")
    g = groundings([finding])[finding.pk]
    assert (g.mask.pk, g.box.pk, g.kind) == (v1.pk, v2.pk, "mask") and g.versions() == {"mask": 1, "box": 2}

    # the release: the mask (its file and sha) and the drawn box, both version numbers in the provenance
    release, label = the_label(project)
    assert label["kind"] == "mask" and label["mask_key"] == v1.mask.name and label["mask_sha256"]
    assert label["box"] == BOX
    provenance = label["provenance"]
    assert provenance["version"] == 2 and provenance["annotation"] == v1.pk and provenance["author"] == "ann"
    assert provenance["versions"]["mask"]["version"] == 1 and provenance["versions"]["box"]["version"] == 2
    assert provenance["versions"]["box"]["annotation"] == v2.pk
    assert "(1 in this version)" in release.card  # mask labels with their box beside them
    [record] = list(release_cases(release))
    assert np.array_equal(record.labels[0].load_mask(), mask) and record.labels[0].box == BOX

    # training, evaluation and the learning loop take the mask
    [example] = accepted_examples(project, [finding.pk], None)
    assert example["annotation"] == v1.pk and example["mask"] == v1.mask.name
    [evaluated] = finding_cases(project, [finding.pk])
    assert np.array_equal(evaluated.findings[0].mask.astype(bool), mask)
    assert [f.pk for f in _accepted(project)] == [finding.pk]

    # a researcher sees the accepted finding's mask and box (not only the current version)
    seen = set(annotations_for_user(res).filter(finding=finding).values_list("version", flat=True))
    assert seen == {1, 2}


def test_a_mask_after_a_box_keeps_the_box(project, case):
    scan, ann, rad, _ = case
    mask = a_mask(scan, 10)
    finding = grounded(project, scan, ann, rad, [{"kind": "box", "box": BOX}, {"kind": "mask", "mask": mask}])
    _, label = the_label(project)
    v1, v2 = finding.annotations.order_by("version")
    assert label["kind"] == "mask" and label["mask_key"] == v2.mask.name and label["box"] == BOX
    assert label["provenance"]["versions"]["box"]["version"] == 1
    assert label["provenance"]["versions"]["mask"]["version"] == 2
    assert accepted_examples(project, [finding.pk], None)[0]["annotation"] == v2.pk


def test_a_box_alone_stays_a_box_label_and_trains_nothing(project, case):
    scan, ann, rad, _ = case
    finding = grounded(project, scan, ann, rad, [{"kind": "box", "box": BOX}])
    _, label = the_label(project)
    assert label["kind"] == "box" and label["box"] == BOX and label["mask_key"] == ""
    assert label["provenance"]["versions"] == {
        "mask": None,
        "box": {"version": 1, "annotation": finding.annotations.get().pk, "author": "ann"},
    }
    assert _accepted(project) == [] and finding_cases(project, [finding.pk]) == []


def test_a_restored_mask_is_the_newest_mask(project, case):
    """Restore saves an old version again as the newest (frontend/src/versions.ts): mask A (v1), a box
    (v2), mask B (v3), A restored (v4): the grounding is A again with the box; the researcher sees v2 and
    v4, not the masks they replaced."""
    scan, ann, rad, res = case
    first, second = a_mask(scan, 4), a_mask(scan, 20)
    steps = [
        {"kind": "mask", "mask": first},
        {"kind": "box", "box": BOX},
        {"kind": "mask", "mask": second},
    ]
    task = task_next(project=project, user=ann, stages=ANNOTATE)
    for step in steps:
        task.finding.refresh_from_db()
        annotation_save(task_id=task.pk, user=ann, base_version=task.finding.current_version, **step)
    finding = Finding.objects.select_related("scan").get(pk=task.finding_id)
    g = groundings([finding])[finding.pk]
    assert g.versions() == {"mask": 3, "box": 2}
    shape = tuple(int(n) for n in scan.shape)
    restored = version_mask(finding.annotations.get(version=1), shape)  # what the screen sends back
    annotation_save(task_id=task.pk, user=ann, base_version=3, kind="mask", mask=restored)
    task_submit(task_id=task.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=REVIEW).pk, user=rad)

    g = groundings([finding])[finding.pk]
    assert g.versions() == {"mask": 4, "box": 2}
    assert np.array_equal(version_mask(g.mask, shape), first)
    _, label = the_label(project)
    assert label["mask_key"] == g.mask.mask.name and label["box"] == BOX
    assert accepted_examples(project, [finding.pk], None)[0]["annotation"] == g.mask.pk
    seen = set(annotations_for_user(res).filter(finding=finding).values_list("version", flat=True))
    assert seen == {2, 4}


def test_groundings_of_many_findings_take_one_query(project, tmp_path, make_user, django_assert_num_queries):
    scan = review_case(
        project,
        tmp_path,
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion. "
        "Mild emphysema.",
    )
    ann = make_user("ann")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    made = []
    for n in range(3):
        task = task_next(project=project, user=ann, stages=ANNOTATE)
        kinds = [{"kind": "mask", "mask": a_mask(scan, 2 + n)}, {"kind": "box", "box": BOX}][: n + 1]
        for step in kinds:
            task.finding.refresh_from_db()
            annotation_save(task_id=task.pk, user=ann, base_version=task.finding.current_version, **step)
        task_submit(task_id=task.pk, user=ann, decision="accept")
        made.append(task.finding_id)
    findings = list(Finding.objects.filter(pk__in=made))
    with django_assert_num_queries(1):
        found = groundings(findings, related=("author",))
        authors = {g.mask.author.username for g in found.values() if g.mask}
    assert authors == {"ann"} and Annotation.objects.filter(finding_id__in=made).count() == 1 + 2 + 2
    assert [found[pk].versions() for pk in made] == [
        {"mask": 1, "box": None},
        {"mask": 1, "box": 2},
        {"mask": 1, "box": 2},
    ]
    assert groundings([]) == {}


def test_store_back_sends_the_mask_not_a_later_box(project, case, settings):
    """store_back_due (pacs/storeback.py) names the mask version; rows of a real source and series link."""
    from pacs.models import PacsSeriesLink, PacsSource
    from pacs.storeback import store_back_due

    scan, ann, rad, _ = case
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    source = PacsSource.objects.create(
        project=project, name="pacs", base_url="http://pacs.invalid/dicom-web", store_back=True
    )
    PacsSeriesLink.objects.create(
        project=project, source=source, scan=scan, study_uid="1.2", series_uid="1.2.3"
    )
    finding = grounded(
        project, scan, ann, rad, [{"kind": "mask", "mask": a_mask(scan, 4)}, {"kind": "box", "box": BOX}]
    )
    [record] = store_back_due(source=source)
    assert record.finding_id == finding.pk and record.version == 1  # the mask, not the box (v2)


def test_box_formats_take_the_drawn_box_beside_a_mask(tmp_path):
    """RadFact's boxes of a label with a mask and a box: the drawn box (not the mask's components)."""
    from releases.formats.radfact import label_boxes

    label = LabelRecord(label_id="f1", text="Opacity.", kind="mask", box=[10, 20, 30, 40], mask_path=None)
    assert label_boxes(label, 100, 80, "c/f1") == [{"x_min": 0.1, "y_min": 0.25, "x_max": 0.3, "y_max": 0.5}]


def test_a_readers_box_does_not_sit_beside_the_consensus(project, tmp_path, make_user):
    """Several readers: their own versions are the readings', not the finding's. One reader's box is
    merged into the consensus mask with the others' masks; the grounding is the consensus alone."""
    from annotation.readers import reading_next, reading_save, reading_submit

    project.readers_per_finding = 3
    project.save()
    scan = review_case(project, tmp_path, findings="There is a 14 mm nodule in the right upper lobe.")
    readers = [make_user(f"reader{n}") for n in range(3)]
    rad = make_user("rad")
    for user in readers:
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    saves = [{"kind": "mask", "mask": a_mask(scan, 4)}, {"kind": "box", "box": [4, 20, 2, 10, 30, 5]}]
    saves.append(saves[0])
    for user, save in zip(readers, saves, strict=True):
        reading = reading_next(project=project, user=user)
        reading_save(reading_id=reading.pk, user=user, base_version=0, **save)
        reading_submit(reading_id=reading.pk, user=user, decision="accept")
    finding = Finding.objects.get(pk=reading.finding_id)
    consensus = finding.annotations.get(version=finding.current_version)
    assert consensus.author is None and finding.current_version == 4
    assert groundings([finding])[finding.pk].versions() == {"mask": 4, "box": None}
    task_approve(task_id=task_next(project=project, user=rad, stages=REVIEW).pk, user=rad)
    _, label = the_label(project)
    assert label["kind"] == "mask" and label["mask_key"] == consensus.mask.name and label["box"] is None


def test_an_erased_mask_is_no_mask(project, case):
    """Mask (v1), erased to nothing and saved (v2), a box (v3): the finding's grounding is the box alone; the
    first mask does not come back and the empty one is not released as a mask."""
    scan, ann, rad, res = case
    empty = np.zeros(tuple(scan.shape), bool)
    finding = grounded(
        project,
        scan,
        ann,
        rad,
        [
            {"kind": "mask", "mask": a_mask(scan, 4)},
            {"kind": "mask", "mask": empty},
            {"kind": "box", "box": BOX},
        ],
    )
    g = groundings([finding])[finding.pk]
    assert g.mask is None and g.box.version == 3 and g.kind == "box"
    _, label = the_label(project)
    assert label["kind"] == "box" and label["mask_key"] == "" and label["box"] == BOX
    assert label["provenance"]["versions"]["mask"] is None
    with pytest.raises(TrainingError, match=f"#{finding.pk} has no mask"):
        accepted_examples(project, [finding.pk], None)
    assert _accepted(project) == []
    # a researcher sees the box, neither the erased mask nor the one it erased
    assert set(annotations_for_user(res).filter(finding=finding).values_list("version", flat=True)) == {3}

"""The dataset's class table: frozen with its first release, only extended; label values of exports come
from it, so a case nobody touched keeps its label files byte for byte from one version to the next."""

import json

import numpy as np
import pytest

from annotation.models import Stage
from annotation.services import annotation_save, finding_create, task_approve, task_next, task_submit
from core.models import Project, Role
from core.services import membership_set
from releases.exporting import _meta
from releases.freeze import class_table
from releases.models import DatasetRelease
from releases.records import DirSink
from releases.services import dataset_create, release_create, release_diff, release_export_to
from tests.annotation.factories import review_case


def test_class_table_numbers_a_first_table_in_name_order():
    assert class_table(None, {"2e", "1f", "2d"}) == {"1": "1f", "2": "2d", "3": "2e"}
    assert class_table({}, set()) == {}


def test_class_table_extends_without_renumbering():
    # a previous table in any order (releases numbered classes as first met) stays as it is; a class this
    # version lacks keeps its value; the new ones follow the highest value, in name order
    previous = {"1": "2d", "2": "2e", "3": "1f"}
    assert class_table(previous, {"2d", "1f", "1c"}) == {"1": "2d", "2": "2e", "3": "1f", "4": "1c"}
    assert class_table({"1": "b", "5": "z"}, {"y", "a", "b"}) == {"1": "b", "5": "z", "6": "a", "7": "y"}
    assert class_table(previous, {"2d"}) == previous


def test_class_table_keys_are_text_in_value_order():
    table = class_table({2: "x", 1: "w"}, set())
    assert table == {"1": "w", "2": "x"} and list(table) == ["1", "2"]
    ten = class_table({str(i): f"c{i:02d}" for i in range(1, 10)}, {"c10"})
    assert list(ten) == [str(i) for i in range(1, 11)] and ten["10"] == "c10"  # 10 after 9, not after 1


def _grounded_ct(slug: str, folder, make_user, report: str):
    """A CT whose report's findings are all grounded with separate masks, accepted and approved."""
    project = Project.objects.create(slug=slug, name=slug)
    scan = review_case(project, folder, findings=report)
    ann, rad = make_user(f"ann-{slug}"), make_user(f"rad-{slug}")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    n = 0
    while (task := task_next(project=project, user=ann, stages=(Stage.ANNOTATE,))) is not None:
        _accept(task, ann, rad, project, _block(scan, n))
        n += 1
    return project, scan, ann, rad


def _block(scan, n: int) -> np.ndarray:
    mask = np.zeros(tuple(scan.shape), dtype=bool)
    mask[2 + 9 * n : 9 + 9 * n, 6 + 2 * n : 14 + 2 * n, 1 : 4 + (n % 3)] = True
    return mask


def _accept(task, ann, rad, project, mask) -> None:
    annotation_save(
        task_id=task.pk, user=ann, base_version=task.finding.current_version, kind="mask", mask=mask
    )
    task_submit(task_id=task.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=(Stage.REVIEW, Stage.QA)).pk, user=rad)


def _export(release, out):
    sink = DirSink(out)
    try:
        release_export_to(release, "monai", sink)
    finally:
        sink.close()
    dataset = json.loads((out / "dataset.json").read_text())
    items = {item["case_id"]: item for key in ("training", "validation", "test") for item in dataset[key]}
    return dataset, items


@pytest.mark.django_db
def test_a_new_class_gets_the_next_value_and_untouched_cases_keep_their_files(tmp_path, make_user):
    import nibabel as nib

    # v1: findings 2d, 2e, 1f on one CT, 2d on another
    a, scan_a, *_ = _grounded_ct(
        "ct-a",
        tmp_path / "a",
        make_user,
        "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion. "
        "Mosaic attenuation in both lungs.",
    )
    b, scan_b, ann_b, rad_b = _grounded_ct(
        "ct-b", tmp_path / "b", make_user, "There is a 9 mm nodule in the left lower lobe."
    )
    dataset = dataset_create(slug="classes", name="classes", projects=[a, b])
    v1 = release_create(dataset=dataset)
    assert v1.classes == {"1": "1f", "2": "2d", "3": "2e"}  # the first table: name order

    # one case gains a 1c finding; v2
    emphysema = _block(scan_b, 3)
    task = finding_create(
        project=b, user=ann_b, study=scan_b.study, scan=scan_b, text="Mild emphysema.", code="1c"
    )
    _accept(task, ann_b, rad_b, b, emphysema)
    v2 = release_create(dataset=dataset)
    assert v2.classes == {"1": "1f", "2": "2d", "3": "2e", "4": "1c"}
    assert release_diff(v2)["classes"] == {"added": {"4": "1c"}, "renumbered": {}, "unused": []}

    d1, items1 = _export(v1, tmp_path / "v1")
    d2, items2 = _export(v2, tmp_path / "v2")
    assert d1["labels"] == {"0": "background", "1": "1f", "2": "2d", "3": "2e"}
    assert d2["labels"] == {"0": "background", "1": "1f", "2": "2d", "3": "2e", "4": "1c"}
    case_a = next(c for c in items1 if c.endswith(f"-s{scan_a.pk}"))
    case_b = next(c for c in items1 if c.endswith(f"-s{scan_b.pk}"))
    assert items1[case_a] == items2[case_a]  # same split, same files
    for key in ("image", "label"):
        first = (tmp_path / "v1" / items1[case_a][key]).read_bytes()
        assert first == (tmp_path / "v2" / items2[case_a][key]).read_bytes(), key
    label_a = np.asarray(nib.load(tmp_path / "v1" / items1[case_a]["label"]).dataobj)
    assert set(np.unique(label_a)) == {0, 1, 2, 3}
    by_class = {s["category"]: s["value"] for s in d2["cases"][case_a]["segments"]}
    assert by_class == {"2d": 2, "2e": 3, "1f": 1}

    label_b1 = np.asarray(nib.load(tmp_path / "v1" / items1[case_b]["label"]).dataobj)
    label_b2 = np.asarray(nib.load(tmp_path / "v2" / items2[case_b]["label"]).dataobj)
    assert set(np.unique(label_b1)) == {0, 2}
    np.testing.assert_array_equal(label_b2 == 4, emphysema)  # its own block: nothing overlaps it
    np.testing.assert_array_equal(label_b2 == 2, label_b1 == 2)  # the nodule keeps its value

    # a release frozen before tables were kept: its classes numbered in name order for export
    DatasetRelease.objects.filter(pk=v2.pk).update(classes={})
    v2.refresh_from_db()
    assert _meta(v2).classes == {1: "1c", 2: "1f", 3: "2d", 4: "2e"}

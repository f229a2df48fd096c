"""The mask codec's axis convention (studies/masks.py): a mask is (X, Y[, Z]) on the canonical scan array,
X = image column, Y = image row; a 2D mask is stored as a PNG of width X and height Y.

Pinned end to end on a real non-square radiograph (IU 1_IM-0001-4001, 2496 x 2048): a mask painted at a known
pixel of the picture, uploaded as a reviewer's PNG, lands at [x, y] of the stored version, of the released
label (``LabelRecord.load_mask``), of the MONAI export's label NIfTI (beside the same pixel of its image) and
in RadFact's normalised box; a 2D NIfTI mask of the same label gives the same box (before, 2D labels came
back (Y, X) from PNG and (X, Y) from NIfTI)."""

from __future__ import annotations

import io
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from annotation.models import Annotation
from annotation.services import finding_create, task_approve, task_next, task_submit
from core.models import Role
from core.services import membership_set
from studies.masks import (
    MaskError,
    mask_decode,
    mask_encode,
    mask_from_rows,
    mask_load,
    mask_read,
    mask_rows,
    nifti_mask_gz,
)
from studies.models import Scan
from studies.services.scans import scans_ingest

RADIOGRAPH = "cxr/iu/1_IM-0001-4001.dcm.png"  # 2496 wide, 2048 high
X0, X1, Y0, Y1 = 100, 140, 1800, 1830  # a block near the bottom left of the picture: columns x, rows y


def test_a_2d_mask_is_stored_as_a_picture_of_width_x_and_height_y():
    mask = np.zeros((30, 20), bool)  # (X, Y): 30 columns, 20 rows
    mask[25, 3] = True
    data, suffix = mask_encode(mask, np.eye(4))
    assert suffix == ".png"
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size == (30, 20)  # PIL: (width, height)
        assert picture.convert("L").getpixel((25, 3)) == 255  # column 25, row 3
        assert picture.convert("L").getpixel((3, 25 % 20)) == 0
    decoded = mask_decode(data)
    assert decoded.shape == (30, 20) and decoded[25, 3] and decoded.sum() == 1
    assert mask_rows(decoded).shape == (20, 30) and mask_rows(decoded)[3, 25]
    assert np.array_equal(mask_from_rows(mask_rows(decoded)), decoded)


def test_a_3d_mask_is_gzipped_nifti_on_the_scan_affine_and_reads_back_as_it_was(tmp_path):
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    mask = np.zeros((9, 7, 5), bool)
    mask[8, 1, 4] = mask[0, 6, 0] = True
    data, suffix = mask_encode(mask, affine)
    assert suffix == ".nii.gz" and data[:2] == b"\x1f\x8b"
    assert np.array_equal(mask_decode(data), mask)
    (tmp_path / "m.nii.gz").write_bytes(data)
    image = nib.load(tmp_path / "m.nii.gz")
    np.testing.assert_allclose(image.affine, affine)
    assert np.array_equal(np.asarray(image.dataobj) == 1, mask)  # nibabel's own reading
    assert np.array_equal(mask_load(tmp_path / "m.nii.gz"), mask)
    # A 2D NIfTI mask reads in the same order as the PNG of the same mask.
    flat = np.zeros((30, 20), bool)
    flat[25, 3] = True
    (tmp_path / "flat.nii.gz").write_bytes(nifti_mask_gz(flat, np.eye(4)))
    (tmp_path / "flat.png").write_bytes(mask_encode(flat, np.eye(4))[0])
    assert np.array_equal(mask_load(tmp_path / "flat.nii.gz"), mask_load(tmp_path / "flat.png"))


def test_bytes_that_are_no_mask_are_an_error_naming_the_file():
    with pytest.raises(MaskError, match="bad.png"):
        mask_decode(b"\x89PNG\r\n\x1a\n broken", name="bad.png")


@pytest.mark.django_db
def test_a_mask_painted_on_a_real_radiograph_lands_where_releases_export_it(
    tmp_path, shared_data, project, make_user, api_client
):
    from releases.exporting import _meta, release_cases
    from releases.formats import monai_datalist
    from releases.formats.radfact import label_boxes
    from releases.records import DirSink, LabelRecord
    from releases.services import dataset_create, release_create

    # Given the real radiograph ingested: the scan's array is (X, Y) = (width, height) of the picture.
    project.label_schema, project.qa_sample_rate = "chexpert", 0.0
    project.save()
    (tmp_path / "cxr").mkdir()
    shutil.copyfile(shared_data / RADIOGRAPH, tmp_path / "cxr" / "frontal.png")
    assert not scans_ingest(project=project, paths=[tmp_path / "cxr"], workers=1).errors
    scan = Scan.objects.get(project=project)
    with Image.open(shared_data / RADIOGRAPH) as original:
        picture = np.asarray(original.convert("L"))  # (rows, columns)
    width, height = picture.shape[1], picture.shape[0]
    assert width != height and list(scan.shape[:2]) == [width, height]

    # When an annotator uploads a PNG painted at columns X0:X1, rows Y0:Y1 (what the review screen sends).
    ann, rad = make_user("ann"), make_user("rad")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    task = finding_create(
        project=project,
        user=ann,
        study=scan.study,
        scan=scan,
        text="Calcified granuloma.",
        code="Lung Lesion",
    )
    painted = np.zeros((height, width), np.uint8)
    painted[Y0:Y1, X0:X1] = 255
    upload = io.BytesIO()
    Image.fromarray(painted).convert("1").save(upload, format="PNG")
    upload.seek(0)
    upload.name = "painted.png"
    saved = api_client(ann).post(
        reverse("task-annotations", args=[task.pk]),
        {"base_version": 0, "kind": "mask", "mask": upload},
        format="multipart",
    )
    assert saved.status_code == 201, saved.content

    # Then the stored version holds it at [x, y] on the scan's grid.
    version = Annotation.objects.get(pk=saved.json()["id"])
    stored = mask_read(version.mask.name)
    assert stored.shape == (width, height) and stored[X0:X1, Y0:Y1].all() and stored.sum() == 40 * 30
    assert version.voxels == 40 * 30

    task_submit(task_id=task.pk, user=ann, decision="accept")
    task_approve(task_id=task_next(project=project, user=rad, stages=("review", "qa")).pk, user=rad)
    release = release_create(dataset=dataset_create(slug="pin", name="Pin", projects=[project]))

    # And the released label reads (X, Y) too, whatever its file.
    [case] = list(release_cases(release))
    [label] = [lab for lab in case.labels if lab.kind == "mask"]
    released = label.load_mask()
    assert released.shape == (width, height) and np.array_equal(released, stored)

    # And the MONAI export's label NIfTI has it at [x, y], beside the same pixel of its image NIfTI.
    out = tmp_path / "monai"
    sink = DirSink(out)
    try:
        monai_datalist.export(release_cases(release), sink, _meta(release))
    finally:
        sink.close()
    [item] = [
        i
        for key in ("training", "validation", "test")
        for i in json.loads((out / "dataset.json").read_text())[key]
    ]
    label_array = np.asarray(nib.load(out / item["label"]).dataobj)
    image_array = np.asarray(nib.load(out / item["image"]).dataobj)
    assert label_array.shape[:2] == (width, height)
    assert (label_array[X0:X1, Y0:Y1] > 0).all() and int((label_array > 0).sum()) == 40 * 30
    for x, y in ((X0, Y0), (X1 - 1, Y1 - 1), (2000, 300)):
        assert int(np.squeeze(image_array)[x, y]) == int(picture[y, x])  # the picture's column x, row y

    # And RadFact's box is the block's, normalised by width and height; a 2D NIfTI of the label gives it too.
    expected = {"x_min": X0 / width, "y_min": Y0 / height, "x_max": X1 / width, "y_max": Y1 / height}
    [box] = label_boxes(label, width, height, "pin")
    assert box == pytest.approx(expected)
    (tmp_path / "label.nii.gz").write_bytes(nifti_mask_gz(stored, np.asarray(scan.affine)))
    as_nifti = LabelRecord(label_id="n", text="", kind="mask", mask_path=tmp_path / "label.nii.gz")
    [box] = label_boxes(as_nifti, width, height, "pin")
    assert box == pytest.approx(expected)

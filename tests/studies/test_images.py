"""NIfTI and PNG/JPEG files as Volumes."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path
from PIL import Image

from studies.ingest.images import nifti_load, raster_load
from studies.ingest.types import IngestError

NIBABEL_DATA = Path(data_path)


def test_nifti_anatomical_keeps_values_and_affine():
    path = NIBABEL_DATA / "anatomical.nii"
    img = nib.load(str(path))
    volume = nifti_load(path)
    assert volume.array.shape == (33, 41, 25) and volume.array.dtype == np.int16
    assert volume.array.flags.f_contiguous
    assert np.array_equal(volume.array, np.asarray(img.dataobj))
    assert np.allclose(volume.affine, img.header.get_sform()) and img.header["sform_code"] > 0
    assert volume.spacing == (2.0, 2.0, 2.0)
    assert volume.modality == "OT" and volume.warnings == [] and volume.ndim == 3
    assert nifti_load(path, modality="MR").modality == "MR"


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_nifti_4d_is_refused(name):
    with pytest.raises(IngestError) as err:
        nifti_load(NIBABEL_DATA / name)
    assert "4D NIfTI" in err.value.reason and "2 volumes" in err.value.reason and err.value.field == "dim"
    assert err.value.file.endswith(name)


def test_nifti_non_image_files_are_refused(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("hello")
    for path in (text, NIBABEL_DATA / "tiny.mnc", tmp_path / "missing.nii"):
        with pytest.raises(IngestError) as err:
            nifti_load(path)
        assert err.value.file == str(path) and ("NIfTI" in err.value.reason)


def test_nifti_affine_sform_then_qform_then_zooms(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sform = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -5], [0, 0, 3, 7], [0, 0, 0, 1]])
    qform = np.diag([1.5, 2.0, 3.0, 1.0])
    img = nib.Nifti1Image(data, None)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    nib.save(img, tmp_path / "both.nii.gz")
    assert np.allclose(nifti_load(tmp_path / "both.nii.gz").affine, sform)
    img.set_sform(sform, code=0)
    nib.save(img, tmp_path / "qform.nii")
    assert np.allclose(nifti_load(tmp_path / "qform.nii").affine, qform)
    img.set_qform(qform, code=0)
    nib.save(img, tmp_path / "none.nii")
    bare = nifti_load(tmp_path / "none.nii")
    assert (
        np.allclose(np.abs(np.diag(bare.affine)[:3]), (1.5, 2.0, 3.0))
        and "no sform or qform" in bare.warnings[0]
    )


def test_nifti_2d_single_volume_4d_and_scaling(tmp_path):
    flat = np.arange(12, dtype=np.uint8).reshape(3, 4)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii.gz")
    two_d = nifti_load(tmp_path / "flat.nii.gz")
    assert two_d.ndim == 2 and two_d.array.dtype == np.int16 and np.array_equal(two_d.array, flat)
    assert len(two_d.spacing) == 2

    one = np.ones((3, 4, 5, 1), dtype=np.float64) * 0.5
    nib.save(nib.Nifti1Image(one, np.eye(4)), tmp_path / "one.nii.gz")
    three_d = nifti_load(tmp_path / "one.nii.gz")
    assert three_d.array.shape == (3, 4, 5) and three_d.array.dtype == np.float32

    scaled = nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
    scaled.header.set_slope_inter(0.5, 100)
    nib.save(scaled, tmp_path / "scaled.nii")
    values = nifti_load(tmp_path / "scaled.nii")
    assert values.array.dtype == np.float32 and values.array[1, 1, 1] == pytest.approx(103.5)

    wide = np.array([[[0, 70000]]], dtype=np.int32)
    nib.save(nib.Nifti1Image(wide, np.eye(4)), tmp_path / "wide.nii")
    assert nifti_load(tmp_path / "wide.nii").array.dtype == np.float32


def test_raster_real_radiographs(shared_data):
    for path in sorted((shared_data / "cxr" / "iu").glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("L"))
        volume = raster_load(path)
        assert volume.ndim == 2 and volume.array.shape == pixels.shape[::-1]
        assert volume.array.dtype == np.uint8 and np.array_equal(volume.array, pixels.T)
        assert volume.array.flags.f_contiguous and volume.spacing == (1.0, 1.0)
        assert "pixel spacing unknown" in volume.warnings[-1]
        assert np.allclose(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    big = raster_load(shared_data / "cxr" / "iu" / "1_IM-0001-4001.dcm.png")
    assert big.array.shape == (2496, 2048)


def test_raster_generated_png_and_jpeg(tmp_path):
    rows, cols = 40, 60
    gradient16 = (np.arange(rows * cols).reshape(rows, cols) * 27).astype(np.uint16)
    Image.fromarray(gradient16).save(tmp_path / "deep.png")
    deep = raster_load(tmp_path / "deep.png", modality="DX")
    assert (
        deep.array.dtype == np.uint16 and np.array_equal(deep.array, gradient16.T) and deep.modality == "DX"
    )

    gray = (np.arange(rows * cols).reshape(rows, cols) % 256).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    grey_rgb = raster_load(tmp_path / "grey_rgb.png")
    assert np.array_equal(grey_rgb.array, gray.T) and not any("colour" in w for w in grey_rgb.warnings)

    colour = np.zeros((rows, cols, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    red = raster_load(tmp_path / "red.png")
    assert int(red.array[0, 0]) == round(200 * 0.299) and "colour image (RGB)" in red.warnings[0]

    Image.fromarray(gray).save(tmp_path / "x.jpg", quality=95)
    jpeg = raster_load(tmp_path / "x.jpg")
    assert jpeg.array.shape == (cols, rows) and np.abs(jpeg.array.astype(int) - gray.T).mean() < 3
    assert jpeg.meta["source_format"] == "jpeg" and jpeg.burned_in_annotation == "UNKNOWN"


def test_raster_corrupt_files_are_refused(tmp_path, shared_data):
    source = (shared_data / "cxr" / "iu" / "CXR3_IM-1384-1001.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(source[: len(source) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff" + os.urandom(64))
    text = tmp_path / "text.png"
    text.write_text("no picture")
    for path in (cut, junk, text):
        with pytest.raises(IngestError) as err:
            raster_load(path)
        assert err.value.file == str(path) and "not a readable PNG/JPEG" in err.value.reason

"""Writing canonical NIfTI files, reading display slices, PNG rendering and thumbnails."""

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from studies.ingest import volume_io
from studies.ingest.types import Volume
from studies.ingest.volume_io import (
    GzipWriter,
    nifti_read_slice,
    render_png,
    thumbnail_png,
    volume_write_nifti,
    window_presets,
)

# DICOM-like: columns run to patient left (-x), rows to posterior (-y), slices to head (+z)
DICOM_LIKE = np.array([[-0.7, 0, 0, 90.0], [0, -0.8, 0, 120.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def make_volume(shape=(20, 30, 10), affine=DICOM_LIKE, dtype=np.int16) -> Volume:
    values = np.arange(np.prod(shape)).reshape(shape, order="F") % 3000 - 1000
    array = np.asfortranarray(values.astype(dtype))
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(len(shape)))
    return Volume(array=array, affine=affine.copy(), spacing=spacing, modality="CT")


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_write_read_round_trip(tmp_path, name, dtype):
    volume = make_volume(dtype=dtype)
    volume_write_nifti(volume, tmp_path / name)
    img = nib.load(str(tmp_path / name))
    assert img.get_data_dtype() == dtype
    assert np.array_equal(np.asarray(img.dataobj), volume.array)
    assert np.allclose(img.affine, volume.affine) and np.allclose(img.header.get_qform(), volume.affine)
    assert int(img.header["sform_code"]) == 1 and img.header.get_zooms() == pytest.approx(volume.spacing)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial file left beside


def test_written_gzip_is_one_valid_member_readable_by_itk(tmp_path, monkeypatch):
    monkeypatch.setattr(volume_io, "GZIP_CHUNK", 64 * 1024)  # many chunks deflated on threads
    volume = make_volume(shape=(64, 48, 40))
    path = tmp_path / "v.nii.gz"
    volume_write_nifti(volume, path)
    raw = gzip.decompress(path.read_bytes())
    assert len(raw) == 352 + volume.array.nbytes and raw[344:348] == b"n+1\x00"
    assert raw[352:] == volume.array.tobytes(order="F")
    image = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(image).T, volume.array)
    assert image.GetSpacing() == pytest.approx(volume.spacing)


def test_gzip_writer_single_thread_and_empty(tmp_path):
    for threads in (1, 3):
        for payload in (b"", b"abc" * 100_000):
            buf = io.BytesIO()
            with GzipWriter(buf, threads=threads) as gz:
                gz.write(payload)
                assert gz.tell() == len(payload)
            assert gzip.decompress(buf.getvalue()) == payload


def test_2d_volume_is_written_as_2d(tmp_path):
    array = np.asfortranarray(np.arange(35, dtype=np.uint8).reshape(7, 5))
    volume = Volume(array=array, affine=np.diag([-0.2, -0.3, 1.0, 1.0]), spacing=(0.2, 0.3), modality="CR")
    volume_write_nifti(volume, tmp_path / "cr.nii.gz")
    img = nib.load(str(tmp_path / "cr.nii.gz"))
    assert img.header["dim"][0] == 2 and img.shape == (7, 5) and img.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(img.dataobj), array)
    assert np.array_equal(nifti_read_slice(tmp_path / "cr.nii.gz"), array.T)


def test_display_slices_in_three_orientations(tmp_path):
    volume = make_volume(shape=(20, 30, 10))
    path = tmp_path / "v.nii.gz"
    volume_write_nifti(volume, path)
    a = volume.array
    axial = nifti_read_slice(path)  # middle axial slice: the DICOM image itself
    assert axial.shape == (30, 20) and np.array_equal(axial, a[:, :, 5].T)
    assert np.array_equal(nifti_read_slice(path, axis="axial", index=9), a[:, :, 9].T)
    coronal = nifti_read_slice(path, axis="coronal", index=4)  # 4th from posterior: row j = 30 - 1 - 4
    assert coronal.shape == (10, 20) and np.array_equal(coronal, a[:, 25, ::-1].T)  # head at the top
    sagittal = nifti_read_slice(path, axis="sagittal", index=0)  # patient's far left: column 19
    assert sagittal.shape == (10, 30) and np.array_equal(sagittal, a[19, :, ::-1].T)  # anterior on the left
    with pytest.raises(IndexError):
        nifti_read_slice(path, axis="axial", index=10)
    with pytest.raises(ValueError):
        nifti_read_slice(path, axis="oblique")


def test_display_slices_of_a_ras_file(tmp_path):
    volume = make_volume(shape=(20, 30, 10), affine=np.diag([0.7, 0.8, 2.5, 1.0]))
    volume_write_nifti(volume, tmp_path / "ras.nii")
    axial = nifti_read_slice(tmp_path / "ras.nii", index=3)  # i runs to patient right: shown right -> left
    assert np.array_equal(axial, volume.array[::-1, ::-1, 3].T)


def test_render_png_windows_and_percentiles():
    image = np.linspace(-1000, 1000, 50 * 80).reshape(50, 80)
    png = render_png(image, center=40, width=400)
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert png.startswith(b"\x89PNG") and decoded.shape == (50, 80) and decoded.dtype == np.uint8
    assert decoded[image <= -160].max() == 0 and decoded[image >= 240].min() == 255
    auto = np.asarray(Image.open(io.BytesIO(render_png(image))))
    assert auto.min() == 0 and auto.max() == 255 and (auto == 0).mean() < 0.03
    flat = np.asarray(Image.open(io.BytesIO(render_png(np.full((4, 6), 7.0)))))
    assert flat.shape == (4, 6)
    with pytest.raises(ValueError):
        render_png(np.zeros((2, 2, 2)))


def test_window_presets():
    assert window_presets["lung"] == (-600, 1500) and window_presets["mediastinum"] == (40, 400)
    assert window_presets["bone"] == (400, 1800) and window_presets["brain"] == (40, 80)
    assert window_presets["lung"].center == -600


def test_thumbnails():
    ct = make_volume(shape=(512, 400, 9))
    ct.array[:, :, 4] = 240  # the middle slice at the top of the mediastinum window
    thumb = Image.open(io.BytesIO(thumbnail_png(ct, modality="CT")))
    assert thumb.size == (256, 200) and thumb.mode == "L" and np.asarray(thumb).min() == 255
    small = Image.open(io.BytesIO(thumbnail_png(np.zeros((40, 30), dtype=np.int16), modality="CR")))
    assert small.size == (40, 30)  # 2D (X, Y): never enlarged
    bare = Image.open(io.BytesIO(thumbnail_png(ct.array, modality="MR", size=128)))
    assert max(bare.size) == 128

"""DICOM reading: headers, series grouping, volumes (geometry, values, codecs, radiographs, PET)."""

import hashlib
import random
import shutil
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from studies.ingest.dicom import dicom_group_series, dicom_load_series, dicom_read_headers
from studies.ingest.types import IngestError
from studies.ingest.volume_io import volume_write_nifti
from tests.studies.dicom_factories import (
    copy_with,
    new_dataset,
    save,
    set_pixels,
    slice_pixels,
    write_pet_series,
    write_series,
)

CT_SERIES = "ct/lungdx-a0002"


def load(paths):
    files, errors = dicom_read_headers(paths)
    assert errors == []
    return dicom_load_series(files)


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return path


def ct_paths(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / CT_SERIES).glob("*.dcm"))
    assert len(paths) == 30
    return paths


def assert_matches_sitk(nifti_path: Path, sitk_image: sitk.Image, samples: int = 60, seed: int = 0) -> None:
    """Voxels of our NIfTI (read by nibabel) equal SimpleITK's voxels at the same LPS world points."""
    img = nib.load(str(nifti_path))
    data = np.asarray(img.dataobj)
    reference = sitk.GetArrayViewFromImage(sitk_image)  # (z, y, x)
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0, 0], np.array(data.shape) - 1])
    indices = np.vstack([corners, rng.integers(0, data.shape, size=(samples, 3))])
    assert len({tuple(i) for i in indices}) >= 50
    for ijk in indices:
        ras = img.affine @ np.append(ijk, 1.0)
        lps = (-ras[0], -ras[1], ras[2])
        x, y, z = sitk_image.TransformPhysicalPointToIndex(lps)
        assert (
            0 <= x < sitk_image.GetSize()[0]
            and 0 <= y < sitk_image.GetSize()[1]
            and 0 <= z < sitk_image.GetSize()[2]
        )
        assert data[tuple(ijk)] == reference[z, y, x], f"voxel {ijk} (LPS {lps}) differs"


# --- headers and grouping ---------------------------------------------------------------------------------


def test_read_headers_reports_bad_files_without_raising(tmp_path, shared_data):
    good = ct_paths(shared_data)[:2]
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file\n" * 20)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    no_sop = copy_with(good[0], tmp_path / "nosop.dcm", SOPInstanceUID=None)
    no_series = copy_with(good[0], tmp_path / "noseries.dcm", SeriesInstanceUID=None)
    truncated = pydicom_file("MR_truncated.dcm")
    cut_rle = tmp_path / "cut_rle.dcm"  # encapsulated pixel data cut short
    cut_rle.write_bytes(Path(pydicom_file("MR_small_RLE.dcm")).read_bytes()[:-2000])

    files, errors = dicom_read_headers(
        [*good, text, empty, no_sop, truncated, no_series, tmp_path / "gone.dcm", cut_rle]
    )

    # without SOPInstanceUID or SeriesInstanceUID a file is still read, as other readers read it
    # (studies.ingest.dicom_series; tests/studies/test_realworld_dicom.py)
    assert [f.path for f in files] == [*good, no_sop, no_series]
    assert files[2].sop_uid == files[2].header.file_meta.MediaStorageSOPInstanceUID
    assert files[2].fallbacks == ["sop:file_meta"] and files[3].series_uid == ""
    by_file = {Path(e.file).name: e for e in errors}
    assert set(by_file) == {"notes.txt", "empty.dcm", "MR_truncated.dcm", "gone.dcm", "cut_rle.dcm"}
    assert "not a DICOM file" in by_file["notes.txt"].reason
    assert "truncated" in by_file["MR_truncated.dcm"].reason and "truncated" in by_file["cut_rle.dcm"].reason


def test_read_headers_fields(shared_data):
    path = ct_paths(shared_data)[0]
    [f], _ = dicom_read_headers([path])
    assert f.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (f.rows, f.columns, f.number_of_frames, f.modality) == (512, 512, 1, "CT")
    assert f.position == pytest.approx((-173.1767578125, -294.1767578125, 312.0))
    assert f.orientation == (1, 0, 0, 0, 1, 0)
    assert f.has_pixels and "PixelData" not in f.header
    assert f.header.SeriesInstanceUID == f.series_uid and f.sop_uid == f.header.SOPInstanceUID


def test_read_headers_without_pixels_and_enhanced_first_frame():
    [sr], _ = dicom_read_headers([pydicom_file("reportsi.dcm")])
    assert not sr.has_pixels
    [enhanced], _ = dicom_read_headers([pydicom_file("eCT_Supplemental.dcm")])
    assert enhanced.number_of_frames == 2
    assert enhanced.position == pytest.approx((99.5, -301.5, -159.0))
    assert enhanced.orientation == pytest.approx((-1, 0, 0, 0, 1, 0))


def test_group_series_by_original_uid(tmp_path):
    a = write_series(tmp_path / "a", n=3)
    b = write_series(tmp_path / "b", n=2)
    files, _ = dicom_read_headers([a[0], b[0], a[1], b[1], a[2]])
    groups = dicom_group_series(files)
    assert [len(v) for v in groups.values()] == [3, 2]
    assert list(groups) == [files[0].series_uid, files[1].series_uid]


# --- the real CT series against SimpleITK -----------------------------------------------------------------


def test_real_ct_series_matches_simpleitk(shared_data, tmp_path):
    volume = load(ct_paths(shared_data))
    assert volume.array.shape == (512, 512, 30) and volume.array.dtype == np.int16
    assert volume.array.flags.f_contiguous
    assert (int(volume.array.min()), int(volume.array.max())) == (-1024, 1548)
    assert volume.spacing == pytest.approx((0.6465, 0.6465, 8.0), abs=1e-4)
    assert volume.warnings == [] and volume.burned_in_annotation == "NO"
    assert volume.meta["window"][0] == {"center": 40.0, "width": 350.0, "name": "WINDOW1"}
    out = tmp_path / "ct.nii.gz"
    volume_write_nifti(volume, out)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared_data / CT_SERIES)))
    assert_matches_sitk(out, reader.Execute())


def test_instance_numbers_do_not_order_slices(shared_data, tmp_path):
    paths = ct_paths(shared_data)
    reference = load(paths)
    numbers = list(range(1, 31))
    random.Random(7).shuffle(numbers)
    for name, order in (("reversed", list(range(30, 0, -1))), ("random", numbers)):
        folder = tmp_path / name
        folder.mkdir()
        copies = [
            copy_with(p, folder / f"x{order[i]:02d}.dcm", InstanceNumber=order[i])
            for i, p in enumerate(paths)
        ]
        random.Random(3).shuffle(copies)
        volume = load(copies)
        assert np.array_equal(volume.array, reference.array)
        assert np.allclose(volume.affine, reference.affine)


def test_missing_slice_is_reported(shared_data, tmp_path):
    paths = ct_paths(shared_data)
    volume = load(paths[:14] + paths[15:])
    assert volume.array.shape == (512, 512, 29)
    assert volume.spacing[2] == pytest.approx(8.0)
    [warning] = volume.warnings
    assert (
        "uneven slice spacing: 8 to 16 mm" in warning
        and "a slice may be missing between positions" in warning
    )


def test_mixed_sizes_name_the_file(shared_data, tmp_path):
    paths = ct_paths(shared_data)[:3]
    ds = pydicom.dcmread(paths[1])
    set_pixels(ds, ds.pixel_array[::2, ::2].astype(np.int16), signed=True)
    small = tmp_path / "small.dcm"
    ds.save_as(small)
    with pytest.raises(IngestError) as err:
        load([paths[0], small, paths[2]])
    assert err.value.file == str(small) and err.value.field == "Rows" and "256x256" in err.value.reason


def test_missing_pixel_data_names_the_file(shared_data, tmp_path):
    paths = ct_paths(shared_data)[:3]
    bare = copy_with(paths[2], tmp_path / "bare.dcm", PixelData=None)
    files, errors = dicom_read_headers([paths[0], paths[1], bare])
    assert errors == [] and not files[2].has_pixels
    with pytest.raises(IngestError) as err:
        dicom_load_series(files)
    assert (err.value.file, err.value.field) == (str(bare), "PixelData")


def test_changed_orientation_and_duplicate_positions(tmp_path):
    paths = write_series(tmp_path / "s", n=4)
    tilted = copy_with(paths[2], tmp_path / "tilted.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    with pytest.raises(IngestError) as err:
        load([paths[0], paths[1], tilted, paths[3]])
    assert (err.value.file, err.value.field) == (str(tilted), "ImageOrientationPatient")
    twin = copy_with(paths[1], tmp_path / "twin.dcm", SOPInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(IngestError) as err:
        load([*paths, twin])
    assert err.value.field == "ImagePositionPatient" and "same position" in err.value.reason
    shutil.copy(paths[0], tmp_path / "copy.dcm")
    volume = load([*paths, tmp_path / "copy.dcm"])
    assert volume.array.shape[2] == 4 and "copy.dcm is a copy of slice000.dcm" in volume.warnings[0]


# --- geometry and values of synthetic series ----------------------------------------------------------


def test_oblique_series_affine_maps_voxels_to_positions(tmp_path):
    c, s = np.cos(0.4), np.sin(0.4)
    orientation = (c, s, 0.0, -0.6 * s, 0.6 * c, -0.8)  # oblique rows and columns
    paths = write_series(tmp_path / "obl", n=7, orientation=orientation, step=3.0, spacing=(0.9, 0.6))
    random.Random(1).shuffle(paths)
    volume = load(paths)
    assert volume.spacing == pytest.approx((0.6, 0.9, 3.0))
    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(path.stem.removeprefix("slice"))  # written k-th along the slice normal
        lps = np.array([float(v) for v in ds.ImagePositionPatient])
        assert np.allclose(volume.affine @ [0, 0, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-3)
        assert np.array_equal(volume.array[:, :, k], ds.pixel_array.T)
    out = tmp_path / "obl.nii.gz"
    volume_write_nifti(volume, out)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "obl")))
    assert_matches_sitk(out, reader.Execute(), samples=60)


def test_rescale_and_output_dtype(tmp_path):
    ints = load(write_series(tmp_path / "a", n=2, slope=2, intercept=-1024))
    assert ints.array.dtype == np.int16
    assert np.array_equal(ints.array[:, :, 1], slice_pixels(1, 24, 32).T.astype(int) * 2 - 1024)
    floats = load(write_series(tmp_path / "b", n=2, slope=0.25, intercept=3))
    assert floats.array.dtype == np.float32
    assert np.allclose(floats.array[:, :, 1], slice_pixels(1, 24, 32).T * 0.25 + 3)
    big = load(write_series(tmp_path / "c", n=2, slope=50, intercept=0))  # 50 * 754 > int16
    assert big.array.dtype == np.float32 and big.array.max() == (1000 + 23 * 7 + 31 * 3 - 500) * 50


def test_bits_stored_sign_extension_and_masking(tmp_path):
    ds = new_dataset(modality="OT")
    stored = np.array([[-5, 100], [2047, -2048]], dtype=np.int16)
    set_pixels(ds, stored & 0x0FFF, signed=True, bits_stored=12)  # 12-bit two's complement, high bits 0
    signed = load([save(ds, tmp_path / "signed.dcm")])
    assert np.array_equal(signed.array, stored.T)
    ds = new_dataset(modality="OT")
    set_pixels(
        ds, np.array([[0xF00A, 0x0FFF]], dtype=np.uint16), signed=False, bits_stored=12
    )  # overlay bits
    masked = load([save(ds, tmp_path / "masked.dcm")])
    assert np.array_equal(masked.array, np.array([[10, 4095]]).T)


def test_burned_in_annotation(tmp_path, shared_data):
    assert load([pydicom_file("SC_rgb_jpeg_dcmtk.dcm")]).burned_in_annotation == "UNKNOWN"
    flagged = copy_with(ct_paths(shared_data)[0], tmp_path / "yes.dcm", BurnedInAnnotation="YES")
    assert load([flagged]).burned_in_annotation == "YES"
    said_no = copy_with(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"), tmp_path / "no.dcm", BurnedInAnnotation="NO")
    assert load([said_no]).burned_in_annotation == "NO"


# --- memory and speed ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_peak_memory_close_to_volume_size(tmp_path):
    paths = write_series(tmp_path / "big", n=300, rows=512, cols=512)
    files, _ = dicom_read_headers(paths)
    tracemalloc.start()
    try:
        volume = dicom_load_series(files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.array.shape == (512, 512, 300)
    assert peak <= 2.5 * volume.array.nbytes, (
        f"peak {peak / 2**20:.0f} MiB for {volume.array.nbytes / 2**20:.0f}"
    )


@pytest.mark.slow
def test_speed_within_1_5x_of_simpleitk(shared_data, tmp_path):
    paths = ct_paths(shared_data)

    def ours():
        files, _ = dicom_read_headers(paths)
        volume_write_nifti(dicom_load_series(files), tmp_path / "ours.nii.gz")

    def theirs():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in paths])
        sitk.WriteImage(reader.Execute(), str(tmp_path / "sitk.nii.gz"))

    times = {ours: [], theirs: []}
    for _ in range(3):
        for fn in (ours, theirs):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    assert min(times[ours]) <= 1.5 * min(times[theirs]), times


# --- compressed transfer syntaxes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "compressed"),
    [
        ("MR_small.dcm", "MR_small_bigendian.dcm"),
        ("MR_small.dcm", "MR_small_implicit.dcm"),
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
        ("emri_small.dcm", "emri_small_RLE.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
        ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
    ],
)
def test_lossless_codecs_give_identical_volumes(reference, compressed):
    expected, got = load([pydicom_file(reference)]), load([pydicom_file(compressed)])
    assert got.array.shape == expected.array.shape and got.array.dtype == expected.array.dtype
    assert np.array_equal(got.array, expected.array)
    assert got.meta["transfer_syntax"] != expected.meta["transfer_syntax"]


def test_lossless_jpeg_and_jpeg_2000_match_pydicom():
    for name in ("JPEG-LL.dcm", "693_J2KI.dcm"):
        ds = pydicom.dcmread(pydicom_file(name))
        volume = load([pydicom_file(name)])
        expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        assert volume.array.dtype == np.int16
        assert np.array_equal(volume.array.reshape(ds.Columns, ds.Rows), expected.T)
    ct = load([pydicom_file("693_J2KI.dcm")])
    assert ct.array.shape == (512, 512, 1) and ct.array.min() < -900 and ct.array.max() > 500


def test_lossy_jpeg_decodes():
    extended = load([pydicom_file("JPGExtended.dcm")])  # JPEG extended, 12-bit
    assert extended.array.shape == (256, 1024) and 0 <= extended.array.min() < extended.array.max() < 4096
    try:  # the same image with a misplaced marker: libjpeg refuses it; then the error names the field
        broken = load([pydicom_file("JPEG-lossy.dcm")])
    except IngestError as exc:
        assert exc.field == "PixelData" and "JPEG-lossy.dcm" in exc.file
    else:
        assert broken.array.shape == extended.array.shape
    rgb = load([pydicom_file("SC_rgb_jpeg_dcmtk.dcm")])  # JPEG baseline, YBR_FULL colour
    assert rgb.array.shape == (100, 100) and rgb.array.dtype == np.int16
    expected = pydicom.dcmread(pydicom_file("SC_rgb_jpeg_dcmtk.dcm")).pixel_array @ [0.299, 0.587, 0.114]
    assert np.abs(rgb.array.astype(float) - expected.T).max() <= 2
    assert any("converted to grayscale" in w for w in rgb.warnings)


# --- radiographs and multi-frame ---------------------------------------------------------------------------


def test_cr_radiograph_is_2d_and_inverted(tmp_path):
    path = pydicom_file("RG1_UNCR.dcm")
    raw = pydicom.dcmread(path).pixel_array  # (rows, columns), MONOCHROME1, BitsStored 15
    volume = load([path])
    assert volume.array.shape == (1841, 1955) and volume.ndim == 2 and volume.array.flags.f_contiguous
    assert np.array_equal(volume.array, (32767 - raw.astype(np.int32)).T)
    assert volume.spacing == (1.0, 1.0) and "1.0 mm assumed" in volume.warnings[0]
    assert np.allclose(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert volume.meta["photometric"] == "MONOCHROME1" and volume.meta["inverted"] is True
    assert volume.meta["window"] == [{"center": 32767 - 15000.0, "width": 30000.0, "name": ""}]
    with_imager = copy_with(path, tmp_path / "rg.dcm", PixelSpacing=None, ImagerPixelSpacing=["0.15", "0.16"])
    measured = load([with_imager])
    assert measured.spacing == (0.16, 0.15) and measured.warnings == []
    assert np.allclose(measured.affine, np.diag([-0.16, -0.15, 1.0, 1.0]))


def test_enhanced_ct_frames_ordered_by_position():
    path = pydicom_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    volume = load([path])
    assert volume.array.shape == (512, 512, 2) and volume.spacing == pytest.approx((0.388672, 0.388672, 10.0))
    # frame 2 lies at z = -149 and frame 1 at z = -159; the slice normal of rows (-1,0,0) x columns (0,1,0)
    # points to -z (feet), so frame 2 comes first
    assert np.array_equal(volume.array[:, :, 0], ds.pixel_array[1].T.astype(int) - 1024)
    assert np.array_equal(volume.array[:, :, 1], ds.pixel_array[0].T.astype(int) - 1024)
    assert np.allclose(volume.affine @ [0, 0, 0, 1], [-99.5, 301.5, -149.0, 1])
    assert np.allclose(volume.affine @ [0, 0, 1, 1], [-99.5, 301.5, -159.0, 1])
    assert np.allclose(volume.affine[:3, 0], [0.388672, 0, 0])  # LPS row cosine -x -> RAS +x
    assert volume.meta["window"] == [{"center": 49.0, "width": 102.0, "name": ""}]


def test_multiframe_without_positions_is_stacked_with_warning():
    volume = load([pydicom_file("emri_small.dcm")])
    assert volume.array.shape == (64, 64, 10)
    assert any("no ImagePositionPatient" in w for w in volume.warnings)


def test_deflated_and_rt_dose_files():
    deflated = load([pydicom_file("image_dfl.dcm")])  # Deflated Explicit VR Little Endian
    expected = pydicom.dcmread(pydicom_file("image_dfl.dcm")).pixel_array
    assert np.array_equal(deflated.array, expected.T)
    dose_ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    dose = load([pydicom_file("rtdose.dcm")])  # classic multi-frame placed by GridFrameOffsetVector
    assert dose.array.shape == (10, 10, 15) and dose.array.dtype == np.float32
    assert dose.spacing[2] == pytest.approx(5.0)
    scaled = dose_ds.pixel_array * float(dose_ds.DoseGridScaling)
    assert np.allclose(dose.array[:, :, 0], scaled[0].T) and np.allclose(dose.array[:, :, 14], scaled[14].T)
    assert dose.affine[2, 3] == pytest.approx(-761.87) and (dose.affine @ [0, 0, 14, 1])[2] == pytest.approx(
        -691.87
    )


# --- PET -------------------------------------------------------------------------------------------------


def _pet_sets(shared_data: Path) -> list[Path]:
    sets = sorted((shared_data / "pet" / "suv-metadata").glob("*-instances.json"))
    assert len(sets) == 8
    return sets


def test_pet_per_slice_slopes_and_suv_header(shared_data, tmp_path):
    for header_set in _pet_sets(shared_data):
        paths, instances, stored = write_pet_series(tmp_path / header_set.stem, header_set)
        random.Random(0).shuffle(paths)
        volume = load(paths)
        assert volume.array.dtype == np.float32 and volume.modality == "PT"
        for k, pixels in enumerate(stored):  # slice k was written at z = -200 + 4k with its own slope
            slope = float(f"{0.5 + 0.37 * (k + 1):.6g}")
            assert np.allclose(volume.array[:, :, k], pixels.T * slope, rtol=1e-6)
        pet = volume.meta["pet"]
        first = instances[0]
        for key in ("PatientWeight", "RadionuclideTotalDose", "RadionuclideHalfLife"):
            assert pet[key] == pytest.approx(float(first[key])), (header_set.name, key)
        for key in ("Units", "DecayCorrection", "SeriesDate", "SeriesTime", "RadiopharmaceuticalStartTime"):
            assert pet[key] == first[key].strip(), (header_set.name, key)
        assert pet["CorrectedImage"] == first["CorrectedImage"]
        earliest = min(instances, key=lambda i: (i["AcquisitionDate"], i["AcquisitionTime"]))
        assert (pet["AcquisitionDate"], pet["AcquisitionTime"]) == (
            earliest["AcquisitionDate"],
            earliest["AcquisitionTime"],
        )
        if "PatientSize" in first:
            assert pet["PatientSize"] == pytest.approx(first["PatientSize"])
        if first.get("RadiopharmaceuticalStartDateTime"):
            assert (
                pet["RadiopharmaceuticalStartDateTime"] == first["RadiopharmaceuticalStartDateTime"].strip()
            )
        expected = {k: float(v) for k, v in first["PhilipsPETPrivateGroup"].items()}
        assert pet["PhilipsPETPrivateGroup"] == pytest.approx(expected)
        if "PHILIPS" in header_set.name:
            assert pet["PhilipsPETPrivateGroup"]["SUVScaleFactor"] > 0
            assert pet["Manufacturer"].startswith("Philips")


def test_pet_acquisition_time_is_the_earliest(shared_data, tmp_path):
    header_set = shared_data / "pet" / "suv-metadata" / "SIEMENS-instances.json"
    paths, _, _ = write_pet_series(tmp_path / "pet", header_set)
    changed = [
        copy_with(paths[0], tmp_path / "a.dcm", AcquisitionTime="110000", FrameReferenceTime="1.5"),
        copy_with(paths[1], tmp_path / "b.dcm", AcquisitionTime="0959", FrameReferenceTime="2.5"),
        copy_with(paths[2], tmp_path / "c.dcm", AcquisitionDate="20201218", AcquisitionTime="0100"),
    ]
    pet = load(changed).meta["pet"]
    assert (pet["AcquisitionDate"], pet["AcquisitionTime"], pet["FrameReferenceTime"]) == (
        "20201217",
        "0959",
        2.5,
    )
    assert pet["PhilipsPETPrivateGroup"] == {} and pet["Manufacturer"] == "SIEMENS"


def test_headers_without_pixel_location_are_read_again(tmp_path):
    paths = write_series(tmp_path / "s", n=3)
    files, _ = dicom_read_headers(paths)
    expected = dicom_load_series(files).array
    for f in files:
        delattr(f.header, "_groundlab_pixels")  # e.g. a header rebuilt elsewhere
    assert np.array_equal(dicom_load_series(files).array, expected)
    paths[1].write_bytes(paths[1].read_bytes() + b"\x00\x00")  # changed after its header was read
    files, _ = dicom_read_headers(paths)
    paths[1].write_bytes(paths[1].read_bytes()[:-10])
    with pytest.raises(IngestError) as err:
        dicom_load_series(files)
    assert err.value.file == str(paths[1]) and "changed" in err.value.reason

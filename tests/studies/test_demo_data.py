"""The real CT that ships with the demo (``studies/demo_data``): 30 JPEG-LS lossless files with the
attribution and licence beside them; made again from ``../shared/data`` it is the same zip byte for byte,
and every pixel and element equals TCIA's original, as pydicom and SimpleITK (GDCM) read them."""

import io
import zipfile

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import JPEGLSLossless

from studies import demo

ORIGINAL = "ct/lungdx-a0002"


def _shipped() -> dict[str, pydicom.Dataset]:
    with zipfile.ZipFile(demo.REAL_CT_ZIP) as zf:
        return {
            name.rsplit("/", 1)[1]: pydicom.dcmread(io.BytesIO(zf.read(name)))
            for name in zf.namelist()
            if name.endswith(".dcm")
        }


def test_the_shipped_ct_is_one_lossless_series_with_its_licence():
    shipped = _shipped()
    assert len(shipped) == demo.REAL_CT_FILES == 30
    assert {ds.file_meta.TransferSyntaxUID for ds in shipped.values()} == {JPEGLSLossless}
    assert len({ds.SeriesInstanceUID for ds in shipped.values()}) == 1
    assert {ds.StudyInstanceUID for ds in shipped.values()} == {demo.REAL_CT_STUDY_UID}
    positions = sorted(float(ds.ImagePositionPatient[2]) for ds in shipped.values())
    assert np.allclose(np.diff(positions), 8.0) and shipped["1-01.dcm"].pixel_array.shape == (512, 512)
    attribution = (demo.DEMO_DATA / "lungdx-a0002.ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "10.7937/TCIA.2020.NNC2-0461" in attribution
    licence = (demo.DEMO_DATA / "LICENSE-CC-BY-4.0.txt").read_text()
    assert "Creative Commons Attribution 4.0 International Public License" in licence
    assert "Section 3 -- License Conditions." in licence
    assert demo.REAL_CT_ZIP.stat().st_size < 6 * 1024**2  # the 15.8 MB series, compactly


def test_the_shipped_ct_is_tcia_original_pixel_for_pixel(shared_data, tmp_path):
    originals = {p.name: pydicom.dcmread(p) for p in sorted((shared_data / ORIGINAL).glob("*.dcm"))}
    shipped = _shipped()
    assert sorted(shipped) == sorted(originals)
    for name, original in originals.items():
        copy = shipped[name]
        assert np.array_equal(copy.pixel_array, original.pixel_array), name
        changed = [
            e.keyword
            for e in original
            if e.keyword != "PixelData" and (e.tag not in copy or copy[e.tag].value != e.value)
        ]
        assert changed == [] and [e.keyword for e in copy if e.tag not in original] == [], name
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    # GDCM (through SimpleITK) reads the shipped series as the same volume
    with zipfile.ZipFile(demo.REAL_CT_ZIP) as zf:
        zf.extractall(tmp_path / "shipped")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "shipped" / "lungdx-a0002")))
    ours = reader.Execute()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared_data / ORIGINAL)))
    theirs = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
    assert ours.GetOrigin() == theirs.GetOrigin() and ours.GetSpacing() == theirs.GetSpacing()
    # and the zip is made again from the originals byte for byte
    again = demo.pack_real_ct(shared_data / ORIGINAL, tmp_path / "again.zip")
    assert again.read_bytes() == demo.REAL_CT_ZIP.read_bytes()

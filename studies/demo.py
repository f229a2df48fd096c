"""Demo data the project generates itself: a synthetic chest CT series (DICOM) with lungs and a nodule,
a matching report, and helpers for the packaged real files used by ``make demo``.

Geometry of the synthetic CT: axial slices, rows run anterior->posterior, columns right->left (the usual
LPS display), slice positions increase towards the head. Values are Hounsfield units.
"""

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DEMO_ACCESSION = "DEMO0001"
DEMO_REPORT = {
    "findings": (
        "Lungs: There is a 14 mm solid nodule in the right upper lobe. No consolidation. "
        "No pleural effusion or pneumothorax. Heart size is normal. No mediastinal lymphadenopathy."
    ),
    "impression": "14 mm right upper lobe pulmonary nodule. Follow-up CT recommended.",
}


def synthetic_chest_ct(
    shape: tuple[int, int, int] = (48, 192, 192), spacing: tuple[float, float, float] = (5.0, 1.8, 1.8)
) -> tuple[np.ndarray, dict]:
    """A chest phantom in HU, array axes ``(Z, Y, X)`` = (slice, row, column); spacing (z, y, x) in mm.

    Body (soft tissue 40 HU, fat rim -100 HU), two lungs (-850 HU), spine (700 HU), heart (40 HU), and a
    solid nodule (30 HU, 14 mm diameter) in the right upper lung. Returns the array and a description of
    where things are (the nodule centre in voxels and its radius in mm).
    """
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        np.arange(nz, dtype=np.float32),
        np.arange(ny, dtype=np.float32),
        np.arange(nx, dtype=np.float32),
        indexing="ij",
    )
    sz, sy, sx = spacing
    cy, cx = ny / 2, nx / 2
    # millimetres from the centre of each slice
    my, mx = (y - cy) * sy, (x - cx) * sx
    vol = np.full(shape, -1000, dtype=np.int16)
    body = (mx / 160) ** 2 + (my / 115) ** 2 <= 1
    vol[body] = -100
    vol[(mx / 150) ** 2 + (my / 105) ** 2 <= 1] = 40
    zfrac = z / max(nz - 1, 1)
    lung_ry = 75 * np.clip(0.55 + 0.6 * zfrac, 0, 1)  # lungs narrow towards the apex
    for side in (-1, 1):  # image left = patient right (side -1)
        lung = ((mx - side * 65) / 48) ** 2 + ((my + 5) / lung_ry) ** 2 <= 1
        vol[lung & (zfrac < 0.95)] = -850
    heart = ((mx + 10) / 45) ** 2 + ((my + 30) / 40) ** 2 <= 1
    vol[heart & (zfrac < 0.45)] = 40
    spine = (mx / 16) ** 2 + ((my - 70) / 16) ** 2 <= 1
    vol[spine] = 700
    nodule_c = (int(nz * 0.7), int(cy - 15 / sy), int(cx - 65 / sx))  # right upper lung
    radius = 7.0
    nodule = ((z - nodule_c[0]) * sz) ** 2 + ((y - nodule_c[1]) * sy) ** 2 + (
        (x - nodule_c[2]) * sx
    ) ** 2 <= radius**2
    vol[nodule] = 30
    return vol, {"nodule_center_zyx": nodule_c, "nodule_radius_mm": radius}


def write_ct_series(
    folder: Path,
    volume_zyx: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    *,
    patient_name: str = "DEMO^SYNTHETIC",
    patient_id: str = "DEMO-0001",
    accession: str = DEMO_ACCESSION,
    study_date: dt.date = dt.date(2024, 3, 14),
    shuffle_instance_numbers: bool = False,
) -> list[Path]:
    """Write ``volume_zyx`` (HU) as a DICOM CT series, one file per slice (stored value = HU + 1024)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    nz, ny, nx = volume_zyx.shape
    sz, sy, sx = spacing_zyx
    order = list(range(nz))
    if shuffle_instance_numbers:
        order = list(np.random.default_rng(0).permutation(nz))
    paths = []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            patient_name,
            patient_id,
            "19600101",
            "O",
        )
        ds.AccessionNumber = accession
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.Modality = "CT"
        ds.Manufacturer = "groundlab synthetic phantom"
        ds.InstitutionName = "Demo Hospital"
        ds.ReferringPhysicianName = "REFERRER^DEMO"
        ds.StudyDescription = "CT CHEST"
        ds.SeriesDescription = "Synthetic chest phantom"
        ds.SeriesNumber, ds.InstanceNumber = 1, int(order[k]) + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -300.0 + k * sz]
        ds.SliceThickness = sz
        ds.PixelSpacing = [sy, sx]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = (volume_zyx[k].astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_demo_report_csv(path: Path, *, accession: str = DEMO_ACCESSION) -> Path:
    """A CSV with the report of the synthetic CT (id column ``accession``; link by accession number)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["accession", "indication", "findings", "impression"])
        writer.writerow([accession, "Cough. Smoker.", DEMO_REPORT["findings"], DEMO_REPORT["impression"]])
    return path


def packaged_scans() -> list[Path]:
    """Real files that packages ship: the PA chest radiograph RG1_UNCR.dcm (pydicom-data) and pydicom's
    CT_small.dcm and MR_small.dcm."""
    from pydicom.data import get_testdata_file

    out = []
    for name in ("RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm"):
        found = get_testdata_file(name)
        if found is None:
            raise FileNotFoundError(f"{name}: install pydicom-data (pip install pydicom-data)")
        out.append(Path(found))
    return out


DEMO_GAZE_WORDS = [
    ("the", 0.8, 0.95), ("lungs", 0.95, 1.4), ("are", 1.4, 1.55), ("clear", 1.55, 2.0), (".", 2.0, 2.0),
    ("heart", 2.9, 3.3), ("size", 3.3, 3.6), ("is", 3.6, 3.7), ("normal", 3.7, 4.2), (".", 4.2, 4.2),
    ("no", 5.0, 5.15), ("pleural", 5.15, 5.6), ("effusion", 5.6, 6.2), (".", 6.2, 6.2),
]  # fmt: skip


# The demo radiograph's anatomy, for its gaze recording's regions (FG-CXR's seven are built from it): an
# ellipse per organ placed by hand on RG1_UNCR.dcm (PA view), as (centre x, centre y, half width, half
# height) in fractions of the image's width and height. An approximation for the demo, not a segmentation;
# the patient's right lung is on the image's left.
DEMO_ANATOMY = {
    "right_lung": (0.256, 0.43, 0.17, 0.34),
    "left_lung": (0.735, 0.44, 0.175, 0.35),
    "heart": (0.62, 0.65, 0.175, 0.14),
}


def demo_anatomy_masks(width: int, height: int) -> dict[str, np.ndarray]:
    """``DEMO_ANATOMY`` as boolean ``(height, width)`` masks (pixel centres inside the ellipse); the lungs
    leave out the heart."""
    rows, cols = np.mgrid[0:height, 0:width]
    masks = {}
    for name, (fx, fy, fa, fb) in DEMO_ANATOMY.items():
        masks[name] = ((cols + 0.5 - fx * width) / (fa * width)) ** 2 + (
            (rows + 0.5 - fy * height) / (fb * height)
        ) ** 2 <= 1
    for lung in ("left_lung", "right_lung"):
        masks[lung] &= ~masks["heart"]
    return masks


def demo_anatomy_pngs(width: int, height: int) -> dict[str, bytes]:
    """``demo_anatomy_masks`` as 1-bit PNGs, as ``studies.services.gaze.anatomy_mask_set`` takes them."""
    import io

    from PIL import Image

    out = {}
    for name, mask in demo_anatomy_masks(width, height).items():
        buf = io.BytesIO()
        Image.fromarray(mask).convert("1").save(buf, format="PNG")
        out[name] = buf.getvalue()
    return out


def write_demo_gaze(root: Path) -> Path:
    """A REFLACX-format recording of the demo radiograph ``RG1_UNCR.dcm`` (1841 x 1955 px)."""
    from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx

    spec = ReflacxSpec(
        id="P102R000001", dicom_id="RG1_UNCR", image_size=(1841, 1955), n_fixations=40, words=DEMO_GAZE_WORDS
    )
    return write_reflacx(root, recordings=[spec])

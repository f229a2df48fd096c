"""The demo's data: the real chest CT series that ships with the project (``studies/demo_data``, TCIA
Lung-PET-CT-Dx patient Lung_Dx-A0002, CC BY 4.0) and the reports written for it and for the packaged
radiograph, helpers for the packaged real files used by ``make demo``, and data the project generates
itself: a synthetic chest CT phantom (DICOM) with lungs and a nodule of known size and place, which the
tests that need a known answer use.

Geometry of the synthetic CT: axial slices, rows run anterior->posterior, columns right->left (the usual
LPS display), slice positions increase towards the head. Values are Hounsfield units.
"""

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DEMO_ACCESSION = "DEMO0001"  # the synthetic CT's accession number

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
REAL_CT_ZIP = DEMO_DATA / "lungdx-a0002.zip"  # see DEMO_DATA / "lungdx-a0002.ATTRIBUTION.md"
REAL_CT_FILES = 30

# The reports of the demo's two real studies, keyed by their (original) StudyInstanceUID: ingest links a
# report to its study by the remapped UID (``link="study-uid"``). Written for what the images show, from
# reading them: the CT on lung (-600/1500) and mediastinal (40/400) windows, sizes from its 0.646 mm pixels
# and 8 mm slices; the radiograph on its full range.
REAL_CT_STUDY_UID = "1.3.6.1.4.1.14519.5.2.1.6655.2359.104855313699639828167809534834"
RADIOGRAPH_STUDY_UID = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"  # RG1_UNCR.dcm
DEMO_REPORTS = {
    REAL_CT_STUDY_UID: {
        "indication": "Lung mass. Staging.",
        "findings": (
            "Lungs: There is a 5.3 x 4.8 x 4.0 cm spiculated mass in the right lower lobe, extending to the "
            "right hilum, with air bronchograms. The left lung is clear. "
            "No pleural effusion or pneumothorax. Heart size is normal. No pericardial effusion."
        ),
        "impression": "5.3 cm spiculated mass in the right lower lobe, likely primary lung cancer.",
    },
    RADIOGRAPH_STUDY_UID: {
        "indication": "Known malignancy.",
        "findings": (
            "Multiple round masses of varying size in both lungs, the largest in the right lower zone. "
            "Heart size is normal. No pleural effusion."
        ),
        "impression": "Multiple pulmonary masses in both lungs, in keeping with metastases.",
    },
}

# The radiograph report's words on its largest mass: the demo adds it as a finding of its own, for
# demo-annotator to draw (releases.demo.demo_radiograph).
RADIOGRAPH_LARGEST_MASS = "the largest in the right lower zone"

# Where the demo annotator clicks to ground the CT's mass: the middle of the mass, in the series' patient
# coordinates (DICOM LPS, mm; slice z = 184 mm, the 14th slice from the feet). ``releases.demo`` maps it to
# a voxel through the stored scan's affine.
REAL_CT_MASS_CLICK_LPS = (-63.3, -93.8, 184.0)


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


def write_demo_report_csv(path: Path) -> Path:
    """A CSV with the reports of the real CT and the radiograph (``DEMO_REPORTS``; id column ``study_uid``,
    link by Study UID)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_uid", "indication", "findings", "impression"])
        for uid, report in DEMO_REPORTS.items():
            writer.writerow([uid, report["indication"], report["findings"], report["impression"]])
    return path


def pack_real_ct(source: Path, dest: Path) -> Path:
    """``REAL_CT_ZIP`` made again from the original series ``source`` (``../shared/data/ct/lungdx-a0002``):
    every file re-encoded losslessly as JPEG-LS (transfer syntax 1.2.840.10008.1.2.4.80; every other
    element, UIDs and geometry included, as it was) and stored uncompressed in a zip (JPEG-LS leaves deflate
    nothing to gain) under ``lungdx-a0002/``, with fixed member dates: the same input gives the same bytes.
    Sizes of the 30 files (15.8 MB): this 5.3 MB; JPEG 2000 lossless 5.2 MB at twice the time to encode
    and decode, RLE 7.7 MB, the originals deflated 9.0 MB, bzip2 6.4 MB."""
    import io
    import zipfile

    import pydicom
    from pydicom.uid import JPEGLSLossless

    files = sorted(Path(source).glob("*.dcm"))
    if len(files) != REAL_CT_FILES:
        raise FileNotFoundError(f"{source}: expected {REAL_CT_FILES} .dcm files, found {len(files)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for file in files:
            ds = pydicom.dcmread(file)
            ds.compress(JPEGLSLossless, generate_instance_uid=False)  # pydicom would make a new UID
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            info = zipfile.ZipInfo(f"lungdx-a0002/{file.name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return dest


FORMATS_3D = ("rexgroundingct", "monai", "dicom-seg")  # every export format that holds a CT
FORMATS_2D = ("fgcxr", "iai", "chexpert", "radfact")  # every one that holds a radiograph


def release_commands(project: str, dataset: str, modality: str, formats: tuple[str, ...]) -> list[str]:
    """The ``manage.py`` commands (without ``manage.py``) that ``demo_setup`` prints: freeze a release of
    ``dataset`` with the ``modality`` scans of ``project`` (CT: the reviewed findings and, unreviewed or
    as context, the weak labels and the lungs generator's lungs; CR: the weak labels, the report's and
    the gaze's, that the radiograph's formats take) and export it in ``formats``, each to
    ``var/<dataset>-<format>``."""
    source = " --source weak" if modality == "CR" else " --source both"
    out = [f"release_create --dataset {dataset} --project {project}{source} --modality {modality}"]
    out += [f"release_export --dataset {dataset} --format {f} --out var/{dataset}-{f}" for f in formats]
    return out


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


# The demo radiograph's dictation (REFLACX word rows: word, start s, end s), the findings of its report.
DEMO_GAZE_WORDS = [
    ("multiple", 0.8, 1.2), ("masses", 1.2, 1.7), ("in", 1.7, 1.8), ("both", 1.8, 2.1), ("lungs", 2.1, 2.6),
    (".", 2.6, 2.6),
    ("heart", 3.6, 4.0), ("size", 4.0, 4.3), ("is", 4.3, 4.4), ("normal", 4.4, 4.9), (".", 4.9, 4.9),
    ("no", 5.8, 5.95), ("pleural", 5.95, 6.4), ("effusion", 6.4, 7.0), (".", 7.0, 7.0),
]  # fmt: skip

# Where the reader looks while dictating (image pixels of RG1_UNCR.dcm, 1841 x 1955, x right, y down; the
# patient's right lung on the image's left): the masses (read off the image: four in the right lung, three
# in the left), then the heart, then both costophrenic angles. Each point is one fixation, in this order.
DEMO_GAZE_MASSES = [(480, 1130), (500, 940), (380, 740), (280, 1310), (1330, 690), (1470, 850), (1450, 1170)]
DEMO_GAZE_HEART = [(1150, 1180), (1250, 1300), (1100, 1350), (1200, 1250)]
DEMO_GAZE_BASES = [(200, 1380), (260, 1400), (1600, 1440), (1550, 1420)]


def demo_gaze_fixations() -> list[tuple[float, float, int, int]]:
    """``(start_s, end_s, x_px, y_px)`` of the demo recording: the masses twice over from 0.2 s to 2.6 s
    (the first sentence, with the gaze lead before speech), the heart from 2.7 s to 4.9 s, the bases from
    5.0 s to 7.0 s; each fixation lasts all but 0.05 s of its share of its span."""
    out: list[tuple[float, float, int, int]] = []
    for points, start, end in (
        (DEMO_GAZE_MASSES * 2, 0.2, 2.6),
        (DEMO_GAZE_HEART, 2.7, 4.9),
        (DEMO_GAZE_BASES, 5.0, 7.0),
    ):
        step = (end - start) / len(points)
        for i, (x, y) in enumerate(points):
            t = start + i * step
            out.append((round(t, 3), round(t + step - 0.05, 3), x, y))
    return out


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
    """A REFLACX-format recording of the demo radiograph ``RG1_UNCR.dcm`` (1841 x 1955 px): the dictation
    ``DEMO_GAZE_WORDS``, the fixations ``demo_gaze_fixations()``, a "Mass" ellipse around the masses of
    each lung (certainty 5)."""
    from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx

    spec = ReflacxSpec(
        id="P102R000001",
        dicom_id="RG1_UNCR",
        image_size=(1841, 1955),
        fixations=demo_gaze_fixations(),
        words=DEMO_GAZE_WORDS,
        ellipses=[(200, 640, 620, 1420, 5, {"Mass"}), (1230, 590, 1580, 1270, 5, {"Mass"})],
        labels={"Mass": 5},
    )
    return write_reflacx(root, recordings=[spec])

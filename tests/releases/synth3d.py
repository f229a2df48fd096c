"""Synthetic 3D cases for the exporter tests (no database): images, masks and labels written into a
folder, with the helpers that read exports back."""

from pathlib import Path

import nibabel as nib
import numpy as np

from releases.formats import dicom_seg, monai_datalist, rexgroundingct
from releases.records import CaseRecord, DirSink, ImageRecord, LabelRecord, ReleaseMeta
from studies.ingest.volume_io import nifti_mask_gz

SHAPE = (24, 20, 12)  # (X, Y, Z)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
META = ReleaseMeta(name="chest-findings", version=3, description="test release", licence="CC-BY-4.0")
FORMATS = [rexgroundingct, monai_datalist, dicom_seg]


def make_affine(kind: str) -> np.ndarray:
    """Voxel -> RAS+ mm: ``axial`` as DICOM axial CT comes in (x and y flipped), ``flipped`` with the slice
    axis running from head to feet and X towards patient left, ``oblique`` rotated about two axes."""
    if kind == "axial":
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    elif kind == "flipped":
        affine = np.diag([0.8, -0.8, -2.5, 1.0])
    else:
        a, b = np.deg2rad(12.0), np.deg2rad(-7.0)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        affine = np.eye(4)
        affine[:3, :3] = rz @ rx @ np.diag([-0.8, -0.8, 2.5])
    affine[:3, 3] = [101.6, 87.25, -212.5]
    return affine


def ct_array(shape=SHAPE) -> np.ndarray:
    """int16 HU whose value tells the voxel: -1000 + i + 30 j + 700 k."""
    i, j, k = np.indices(shape)
    return np.asfortranarray((-1000 + i + 30 * j + 700 * k).astype(np.int16))


def blob(slices: tuple[slice, ...], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[slices] = True
    return mask


NODULES = blob(np.s_[2:5, 3:6, 1:3]) | blob(np.s_[15:19, 12:15, 7:10])  # two 26-separate blobs
ATELECTASIS = blob(np.s_[8:14, 5:10, 3:7])


def write_image(folder: Path, name: str, array: np.ndarray, affine: np.ndarray) -> Path:
    path = folder / f"{name}.nii.gz"
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def mask_label(folder: Path, label_id: str, mask: np.ndarray, affine: np.ndarray, **kw) -> LabelRecord:
    path = folder / f"{label_id}.nii.gz"
    path.write_bytes(nifti_mask_gz(mask, affine))
    return LabelRecord(label_id=label_id, kind="mask", mask_path=path, **kw)


def make_case(
    folder: Path,
    case_id: str,
    split: str,
    affine: np.ndarray,
    masks: list[tuple[str, np.ndarray, dict]],
    extra: list[LabelRecord] = (),
    header: dict | None = None,
    sop_uids: list[str] = (),
) -> CaseRecord:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_image(folder, case_id, ct_array(), affine)
    image = ImageRecord(
        path=path,
        shape=list(SHAPE),
        spacing=[0.8, 0.8, 2.5],
        affine=affine,
        modality="CT",
        study_uid=f"2.25.{abs(hash(case_id)) % 10**12}1",
        series_uid=f"2.25.{abs(hash(case_id)) % 10**12}2",
        sop_uids=list(sop_uids),
        dicom_header=header,
    )
    labels = [mask_label(folder, f"{case_id}-{lid}", m, affine, **kw) for lid, m, kw in masks]
    return CaseRecord(
        case_id=case_id,
        patient_id=f"pseudo-{case_id}",
        study_id=f"study-{case_id}",
        split=split,
        image=image,
        report={
            "findings": "Two nodules in the right lower lobe. Basal atelectasis.",
            "impression": "Nodules.",
        },
        report_id=f"report-{case_id}",
        labels=[*labels, *extra],
    )


def findings(folder: Path, case_id: str, affine: np.ndarray) -> CaseRecord:
    """Two mask findings (nodules: two entities; atelectasis: one), a negative report-only finding and a
    box label that no 3D format here holds."""
    absent = LabelRecord(
        label_id=f"{case_id}-effusion",
        text="No pleural effusion.",
        kind="none",
        code="F3",
        category="2e",
        assertion="absent",
        source="weak",
        provenance={"labeler": "rules", "version": "2"},
    )
    box = LabelRecord(label_id=f"{case_id}-box", text="Rib fracture", kind="box", box=[1, 1, 1, 4, 4, 4])
    return make_case(
        folder,
        case_id,
        "train",
        affine,
        [
            (
                "nodules",
                NODULES,
                {"text": "Two nodules in the right lower lobe.", "category": "2d", "code": "F0"},
            ),
            (
                "atelectasis",
                ATELECTASIS,
                {
                    "text": "Basal atelectasis.",
                    "category": "2b",
                    "code": "F1",
                    "source": "model",
                    "provenance": {"source": "lung-seg", "model_version": "lungs v3"},
                },
            ),
        ],
        extra=[absent, box],
    )


def release(tmp_path: Path, affine: np.ndarray) -> list[CaseRecord]:
    src = tmp_path / "src"
    return [
        findings(src, "case-a", affine),
        make_case(src, "case-b", "val", affine, [], extra=[LabelRecord(label_id="case-b-n", text="Normal.")]),
        make_case(
            src, "case-c", "test", affine, [("nodules", NODULES, {"text": "Nodules.", "category": "2d"})]
        ),
    ]


def export(module, cases, out: Path, progress=None):
    sink = DirSink(out)
    try:
        return module.export(iter(cases), sink, META, progress)
    finally:
        sink.close()


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (np.asarray(affine) @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


# --- ReXGroundingCT ---------------------------------------------------------------------------------------

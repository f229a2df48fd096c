"""A release built from real data, for the tests that read exports the way published code does.

``real_release`` ingests the real chest CT ``lungdx-a0002`` (30 DICOM slices) into a ReXGroundingCT
project and three real IU radiographs (PNG) into a CheXpert project and labels their reports with the
rules labeler. An annotator grounds findings (masks on the CT's mass and effusion; on the frontal
radiograph of report 1900 a box and a mask for two findings added by hand with their report spans), rejects
the others, and a radiologist approves each. The lungs generator's anatomy proposals on the CT overlap the
accepted mass. One dataset over both projects is frozen with human and weak labels.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotation.models import Finding, FindingStatus, Stage
from annotation.services import (
    annotation_save,
    finding_create,
    findings_from_proposals,
    task_approve,
    task_next,
    task_submit,
)
from core.models import Role
from core.services import membership_set
from labeling.services import label_run_execute, label_run_get_or_create
from studies.models import Report, Scan
from studies.services.scans import scans_ingest

CT_REPORT = (
    "There is a 3.5 cm spiculated mass in the right lower lobe, consistent with malignancy. "
    "Small right pleural effusion. Mild emphysema in both upper lobes. No pneumothorax."
)
CT_MASS = (slice(150, 230), slice(250, 330), slice(12, 18))  # voxel block (X, Y, Z) inside the right lung
CT_EFFUSION = (slice(120, 170), slice(360, 400), slice(4, 9))  # a block at the right lung's back, lower
CXR_IMAGES = {  # IU report uid (in reports/iu_reports_dev.csv) -> image files (frontal first)
    "1900": ["CXR1900_IM-0584-1001.png", "CXR1900_IM-0584-2001.png"],
    "3": ["CXR3_IM-1384-1001.png"],
}


@dataclass
class RealRelease:
    dataset: object
    release: object
    ct: Scan
    radiographs: list[Scan]
    mass: np.ndarray  # the accepted mask on the CT, (X, Y, Z)


def _iu_reports(shared_data: Path) -> dict[str, dict[str, str]]:
    with open(shared_data / "reports/iu_reports_dev.csv", newline="", encoding="utf-8") as fh:
        return {row["uid"]: row for row in csv.DictReader(fh) if row["uid"] in CXR_IMAGES}


def _review_all(project, ann, rad, ground) -> None:
    """Every open finding: ``ground(task)`` saves a geometry (or not), the annotator accepts it when it
    returns True and rejects it otherwise; a radiologist approves each."""
    while (task := task_next(project=project, user=ann, stages=(Stage.ANNOTATE,))) is not None:
        accept = ground(task)
        task_submit(task_id=task.pk, user=ann, decision="accept" if accept else "reject")
        review = task_next(project=project, user=rad, stages=(Stage.REVIEW, Stage.QA))
        task_approve(task_id=review.pk, user=rad)


def real_release(shared_data: Path, folder: Path, make_user, *, slug: str = "real") -> RealRelease:
    from core.models import Project
    from ml.generators.lungs import lungs_segment
    from ml.preannotate import Region, _store, scan_volume
    from releases.services import dataset_create, release_create

    ct_project = Project.objects.create(slug=f"{slug}-ct", name="real CT", label_schema="rexgroundingct")
    cxr_project = Project.objects.create(slug=f"{slug}-cxr", name="real CXR", label_schema="chexpert")
    ann, rad = make_user(f"{slug}-ann"), make_user(f"{slug}-rad")
    for project in (ct_project, cxr_project):
        project.qa_sample_rate = 0.0
        project.save()
        membership_set(project=project, user=ann, role=Role.ANNOTATOR)
        membership_set(project=project, user=rad, role=Role.RADIOLOGIST)

    # The CT: ingested as DICOM, its report, the rules labels, a lungs proposal, the mass grounded.
    shutil.copytree(shared_data / "ct/lungdx-a0002", folder / "ct")
    assert not scans_ingest(project=ct_project, paths=[folder / "ct"], workers=1).errors
    ct = Scan.objects.get(project=ct_project)
    Report.objects.create(
        project=ct_project, study=ct.study, external_id="lungdx-a0002", source="text", raw_text=CT_REPORT,
        checksum="ct", findings=CT_REPORT,
    )  # fmt: skip
    label_run_execute(run=label_run_get_or_create(project=ct_project, labeler="rules"))
    lungs = lungs_segment(scan_volume(ct), spacing=tuple(ct.spacing), affine=np.asarray(ct.affine))
    _store(
        ct, "lungs", {}, [Region(label=n, mask=m, code=n) for n, m in (("left_lung", lungs.left),
        ("right_lung", lungs.right)) if m.any()], None, None,
    )  # fmt: skip
    assert findings_from_proposals(project=ct_project) >= 1
    mass = np.zeros(tuple(ct.shape), dtype=bool)
    mass[CT_MASS] = True

    def ground_ct(task) -> bool:
        finding = task.finding
        if "mass" in finding.text.lower():
            annotation_save(
                task_id=task.pk, user=ann, base_version=finding.current_version, kind="mask", mask=mass
            )
            return True
        if "effusion" in finding.text.lower():
            effusion = np.zeros(tuple(ct.shape), dtype=bool)
            effusion[CT_EFFUSION] = True
            annotation_save(
                task_id=task.pk, user=ann, base_version=finding.current_version, kind="mask", mask=effusion
            )
            return True
        return False  # rejected: an absent label

    _review_all(ct_project, ann, rad, ground_ct)

    # The radiographs: PNGs, the IU reports of their studies, CheXpert rules labels, a box and a mask.
    reports = _iu_reports(shared_data)
    radiographs = []
    for uid, names in CXR_IMAGES.items():
        (folder / f"cxr-{uid}").mkdir()
        for name in names:
            shutil.copyfile(shared_data / "cxr/iu" / name, folder / f"cxr-{uid}" / name)
        summary = scans_ingest(project=cxr_project, paths=[folder / f"cxr-{uid}"], workers=1)
        assert not summary.errors, summary.errors
    for scan in Scan.objects.filter(project=cxr_project).order_by("id"):
        uid = next(u for u, names in CXR_IMAGES.items() if scan.name.startswith(Path(names[0]).stem[:8]))
        radiographs.append(scan)
        row = reports[uid]
        if not Report.objects.filter(project=cxr_project, external_id=uid).exists():
            Report.objects.create(
                project=cxr_project, study=scan.study, external_id=uid, source="csv",
                raw_text=f"{row['findings']} {row['impression']}", checksum=f"iu-{uid}",
                indication=row["indication"], comparison=row["comparison"], findings=row["findings"],
                impression=row["impression"],
            )  # fmt: skip
    label_run_execute(run=label_run_get_or_create(project=cxr_project, labeler="rules"))
    findings_from_proposals(project=cxr_project)  # the rules find only negatives in these two reports
    # Two findings of report 1900 that the rules labeler leaves out, added by the annotator with their
    # report spans and grounded on the frontal image: a box (sternotomy wires) and a mask (granulomas).
    frontal = radiographs[0]
    width, height = (int(n) for n in frontal.shape[:2])
    body = reports["1900"]["findings"]
    wires = np.zeros((width, height), dtype=bool)  # 2D masks are saved (X, Y)
    wires[width // 2 - 20 : width // 2 + 20, height // 4 : height // 2] = True
    granulomas = np.zeros((width, height), dtype=bool)
    granulomas[width // 5 : width // 5 + 30, height // 3 : height // 3 + 30] = True
    granulomas[3 * width // 4 : 3 * width // 4 + 20, height // 2 : height // 2 + 20] = True
    for sentence, code, geometry in (
        ("There are XXXX sternotomy XXXX identified.", "Support Devices", {"kind": "box", "box": [
            width // 2 - 20, height // 4, width // 2 + 20, height // 2]}),
        ("There are scattered calcified granulomas throughout both lungs.", "Lung Lesion",
         {"kind": "mask", "mask": granulomas}),
    ):  # fmt: skip
        start = body.index(sentence)
        task = finding_create(
            project=cxr_project, user=ann, study=frontal.study, scan=frontal, text=sentence, code=code,
            section="findings", start=start, end=start + len(sentence),
        )  # fmt: skip
        annotation_save(task_id=task.pk, user=ann, base_version=task.finding.current_version, **geometry)
        task_submit(task_id=task.pk, user=ann, decision="accept")
        task_approve(
            task_id=task_next(project=cxr_project, user=rad, stages=(Stage.REVIEW, Stage.QA)).pk, user=rad
        )

    def ground_cxr(task) -> bool:
        return False  # the rules labeler's findings here are negatives: rejected

    _review_all(cxr_project, ann, rad, ground_cxr)
    assert Finding.objects.filter(project=ct_project, status=FindingStatus.ACCEPTED).exists()

    dataset = dataset_create(
        slug=slug, name="Real chest CT and radiographs", projects=[ct_project, cxr_project],
        licence="CC BY 4.0 (CT, TCIA Lung-PET-CT-Dx); CC BY-NC-ND 4.0 (radiographs, Open-i)",
    )  # fmt: skip
    release = release_create(dataset=dataset, selection={"sources": "both"})
    return RealRelease(dataset=dataset, release=release, ct=ct, radiographs=radiographs, mass=mass)

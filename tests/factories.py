"""Rows made directly, for tests that need data without running ingest."""

import itertools

from studies.models import GazeRecording, Patient, Report, Scan, Study

_seq = itertools.count(1)


def make_scan_tree(project, *, modality: str = "CT"):
    """A patient, study, scan, report and gaze recording in ``project``; returns them in a dict."""
    n = next(_seq)
    patient = Patient.objects.create(
        project=project, pseudonym=f"PTEST{n:04d}", identity_hash=f"h{n:063d}", date_shift_days=-10
    )
    study = Study.objects.create(project=project, patient=patient, study_uid=f"2.25.{n}", modality=modality)
    scan = Scan.objects.create(
        project=project,
        study=study,
        series_uid=f"2.25.9{n}",
        name=f"scan{n}",
        modality=modality,
        source_format="dicom",
        ndim=3,
        shape=[4, 4, 2],
        spacing=[1.0, 1.0, 2.0],
        affine=[[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]],
        dtype="int16",
        file=f"projects/{project.slug}/scans/{n}/image.nii.gz",
        source_checksum="0" * 64,
    )
    report = Report.objects.create(
        project=project,
        study=study,
        external_id=f"r{n}",
        source="text",
        raw_text="FINDINGS: normal.",
        findings="normal.",
        checksum="1" * 64,
    )
    gaze = GazeRecording.objects.create(
        project=project,
        scan=scan,
        external_id=f"P102R{n:06d}",
        source_format="reflacx",
        image_width=4,
        image_height=4,
        fixation_count=1,
        fixations={"start": [0.0], "end": [0.5], "x": [1], "y": [2]},
        checksum="2" * 64,
    )
    return {"patient": patient, "study": study, "scan": scan, "report": report, "gaze": gaze}

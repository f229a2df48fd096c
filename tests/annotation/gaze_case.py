"""A radiograph review case with a demo-like gaze recording labelled by a real gaze label run: the
synthetic PA radiograph of ``radiograph_case`` (its report: cardiomegaly, a small left pleural effusion,
spine), a REFLACX recording whose dictation names the heart, the effusion and the lungs while the reader
looks at each (as ``studies.demo``'s recording does for its masses, heart and bases), the demo's anatomy
masks (``studies.demo.demo_anatomy_pngs``: right lung, left lung, heart) and the platform's gaze run."""

from pathlib import Path

from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
from labeling.models import GazeLabelRun
from studies import demo
from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx
from studies.models import GazeRecording, Scan
from studies.services.gaze import anatomy_mask_set, gaze_import
from tests.annotation.factories import radiograph_case

SIZE = (736, 782)  # (width, height): the demo radiograph's 1841 x 1955 at 40 %

# The dictation: three sentences, the first two stating the report's two findings.
WORDS = [
    ("the", 0.8, 0.9), ("heart", 0.9, 1.2), ("is", 1.2, 1.3), ("enlarged", 1.3, 2.0), (".", 2.0, 2.0),
    ("small", 3.2, 3.5), ("left", 3.5, 3.8), ("pleural", 3.8, 4.3), ("effusion", 4.3, 5.0), (".", 5.0, 5.0),
    ("degenerative", 6.0, 6.6), ("spine", 6.6, 7.0), (".", 7.0, 7.0),
]  # fmt: skip

# Where the reader looks (fractions of the image's width and height, x right, y down; the patient's left
# on the image's right): the heart while saying the first sentence, the left base for the second, the
# spine and both lungs for the third. (start, end, [points]).
LOOKS = [
    (0.2, 2.0, [(0.62, 0.63), (0.66, 0.68), (0.58, 0.66), (0.64, 0.6)]),
    (2.2, 5.0, [(0.82, 0.68), (0.8, 0.7), (0.84, 0.66), (0.81, 0.67)]),
    (5.2, 7.0, [(0.5, 0.35), (0.25, 0.4), (0.75, 0.42), (0.5, 0.5)]),
]


def fixations(width: int, height: int) -> list[tuple[float, float, int, int]]:
    out = []
    for start, end, points in LOOKS:
        step = (end - start) / len(points)
        for i, (fx, fy) in enumerate(points):
            t = start + i * step
            out.append((round(t, 3), round(t + step - 0.05, 3), int(fx * width), int(fy * height)))
    return out


def gaze_radiograph_case(project, folder: Path, *, label: bool = True) -> tuple[Scan, GazeRecording]:
    """The radiograph case with its gaze recording (reader ``reader1``) and anatomy masks; with ``label``
    the platform's gaze label run has labelled it (``GazeLabelRun``, done)."""
    scan = radiograph_case(project, folder, size=SIZE, gaze=False)
    width, height = SIZE
    spec = ReflacxSpec(
        id="P102R000001", dicom_id=scan.name, image_size=SIZE, fixations=fixations(width, height), words=WORDS
    )
    summary = gaze_import(
        project=project, path=write_reflacx(folder / "reflacx", recordings=[spec]), fmt="reflacx"
    )
    assert summary.errors == []
    recording = GazeRecording.objects.get(project=project)
    if recording.scan_id != scan.pk:
        GazeRecording.objects.filter(pk=recording.pk).update(scan=scan, study=scan.study)
        recording.refresh_from_db()
    for name, data in demo.demo_anatomy_pngs(width, height).items():
        anatomy_mask_set(recording=recording, name=name, data=data, filename=f"demo-{name}.png")
    if label:
        run = gaze_run_execute(run=gaze_run_get_or_create(project=project), workers=1)
        assert run.done == 1, GazeLabelRun.objects.get(pk=run.pk).results.values("status", "error")
    return scan, recording

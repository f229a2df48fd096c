"""Gaze labels: sentences from transcripts, anatomy dwell and assignment, intense focus, proposals
(pure), and the project run that stores them (resumable, no duplicates, unusable recordings kept)."""

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from labeling.gaze import anatomy as an
from labeling.gaze.heatmaps import heatmap
from labeling.gaze.labels import GazeParams, MapSpec, RecordingInput, Unusable, compute_map, gaze_labels
from labeling.gaze.sentences import transcript_sentences
from labeling.gaze.service import gaze_heatmap_array, gaze_label_one, gaze_run_execute, gaze_run_get_or_create
from labeling.models import (
    GazeAnatomyRecord,
    GazeHeatmap,
    GazeLabelResult,
    GazeSentence,
    RegionProposal,
)
from studies.ingest.gaze.synthetic import DEFAULT_WORDS, EgdSpec, ReflacxSpec, write_egd, write_reflacx
from studies.models import GazeRecording
from studies.services.gaze import gaze_import

W, H = 160, 120


def _words(rows):
    return [{"text": t, "start": s, "end": e} for t, s, e in rows]


# ------------------------------------------------------------------------------------------ sentences


def test_reflacx_sentences_from_word_rows():
    out = transcript_sentences(_words(DEFAULT_WORDS), source_format="reflacx")
    assert out.text == "the lungs are clear. heart size is normal, no effusion."
    assert [(s.text, s.start, s.end) for s in out.sentences] == [
        ("the lungs are clear.", 1.2, 2.4),
        ("heart size is normal, no effusion.", 3.1, 5.71),
    ]
    assert all(out.text[s.char_start : s.char_end] == s.text for s in out.sentences)
    assert out.problems == []


def test_transcript_without_punctuation_or_missing_is_said():
    bare = transcript_sentences(
        _words([w for w in DEFAULT_WORDS if w[0] not in ".,"]), source_format="reflacx"
    )
    assert len(bare.sentences) == 1 and bare.sentences[0].start == 1.2 and bare.sentences[0].end == 5.71
    assert "no sentence punctuation" in bare.problems[0]
    missing = transcript_sentences([], source_format="reflacx")
    assert missing.sentences == [] and "missing" in missing.problems[0]


# ------------------------------------------------------------------------------------------ anatomy


def _masks():
    left = np.zeros((H, W), bool)
    left[10:100, 90:150] = True  # patient's left lung: image right
    right = np.zeros((H, W), bool)
    right[10:100, 10:70] = True
    return {"left_lung": left, "right_lung": right}


def _fix(points):
    """points: (start, end, x, y)"""
    cols = list(zip(*points, strict=True))
    return {"start": list(cols[0]), "end": list(cols[1]), "x": list(cols[2]), "y": list(cols[3]),
            "inside": [0 <= x < W and 0 <= y < H for x, y in zip(cols[2], cols[3], strict=True)]}  # fmt: skip


def test_dwell_count_and_time_to_first_fixation():
    fix = _fix([(0.0, 0.5, 100, 50), (0.6, 1.0, 20, 50), (1.2, 2.0, 120, 20), (2.1, 2.2, 80, 50),
                (2.3, 2.4, -1, -1)])  # fmt: skip
    out = an.anatomy_gaze(fix, _masks(), W, H)
    assert out["left_lung"].dwell_s == pytest.approx(1.3) and out["left_lung"].fixation_count == 2
    assert out["left_lung"].time_to_first_s == 0.0 and out["right_lung"].time_to_first_s == 0.6
    assert out["right_lung"].dwell_share == pytest.approx(0.4 / 1.8)
    never = an.anatomy_gaze(_fix([(0, 1, 80, 110)]), _masks(), W, H)
    assert never["left_lung"].time_to_first_s is None and never["left_lung"].dwell_s == 0


def test_sentence_assignment_by_words_then_gaze():
    shares = {"left_lung": 0.7, "right_lung": 0.2}
    assert an.assign("small right pleural effusion", shares, min_share=0.5) == (["right_lung"], "words")
    assert an.assign("the lungs are clear", shares, min_share=0.5) == (["left_lung", "right_lung"], "words")
    assert an.assign("there is an opacity", shares, min_share=0.5) == (["left_lung"], "gaze")
    assert an.assign("there is an opacity", shares, min_share=0.8) == ([], "")
    assert an.assign("opacity in the lingula", shares, min_share=0.9) == (["left_lung"], "words")


def test_intense_focus_is_above_the_percentile_of_distinct_8bit_values():
    rng = np.random.default_rng(3)
    h = heatmap(_fix([(i, i + 0.3, int(x), int(y)) for i, (x, y) in enumerate(rng.uniform(0, 100, (8, 2)))]),
                width=W, height=H, method="custom", sigma_px=9.0)  # fmt: skip
    image = np.rint(h / h.max() * 255).astype(np.uint8)
    threshold = np.percentile(np.unique(image), 20)  # the plain definition
    assert np.array_equal(an.intense_focus(h, 20), image > threshold)
    assert not an.intense_focus(np.zeros((H, W), np.float32)).any()


def test_clip_to_windows_equals_the_heatmap_time_window():
    fix = _fix([(0.0, 1.0, 20, 20), (0.8, 2.5, 60, 40), (2.9, 3.2, 100, 100), (4.0, 5.0, 30, 90)])
    clipped = an.clip_to_windows(fix, [(0.5, 3.0)])
    kwargs = {"width": W, "height": H, "method": "custom", "sigma_px": 7.0}
    np.testing.assert_allclose(
        heatmap(clipped, **kwargs), heatmap(fix, start=0.5, end=3.0, **kwargs), rtol=1e-6
    )
    union = an.clip_to_windows(fix, [(0.5, 1.0), (0.9, 2.0), (4.5, 9.0)])
    assert union["start"] == [0.5, 0.8, 4.5] and union["end"] == [1.0, 2.0, 5.0]


# ------------------------------------------------------------------------------------------ one recording


def _egd_input(**kwargs) -> RecordingInput:
    fix = _fix([(0.0, 0.6, 120, 50), (0.7, 1.5, 125, 55), (1.6, 2.0, 30, 60), (2.5, 3.5, 40, 40),
                (3.6, 4.0, 35, 45), (4.2, 4.4, 200, 10)])  # fmt: skip
    words = [{"text": "left lower lobe opacity.", "start": 1.0, "end": 2.0},
             {"text": "no right effusion.", "start": 3.8, "end": 4.4}]  # fmt: skip
    base = {"external_id": "x", "source_format": "egd", "width": W, "height": H, "fixations": fix,
            "transcript": words}  # fmt: skip
    return RecordingInput(**{**base, **kwargs})


def _findings(text):
    from labeling.gaze.labels import rules_findings

    return rules_findings(text)


def test_recording_labels_sentences_anatomy_and_a_proposal_inside_the_anatomy():
    params = GazeParams(method="custom", sigma_px=6.0, lead_s=1.0)
    rec = _egd_input()
    out = gaze_labels(rec, _masks(), params, _findings)
    first, second = out.sentences
    assert first["window"] == [0.0, 2.0] and first["anatomies"] == ["left_lung"]
    assert [(f["code"], f["assertion"]) for f in first["findings"]] == [("Lung Opacity", "present")]
    assert second["findings"][0]["assertion"] == "absent"
    sentence_map = compute_map(rec, MapSpec(kind="sentence", windows=[(0.0, 2.0)]), {}, params)
    expected = heatmap(rec.fixations, width=W, height=H, method="custom", sigma_px=6.0, start=0.0, end=2.0)
    np.testing.assert_array_equal(sentence_map, expected)
    assert out.maps[first["map"]].peak == float(expected.max())
    left = next(a for a in out.anatomy if a["anatomy"] == "left_lung")
    assert left["caption"] == "left lower lobe opacity." and left["dwell_s"] == pytest.approx(1.4)
    assert left["time_to_first_s"] == 0.0 and left["fixation_count"] == 2
    right = next(a for a in out.anatomy if a["anatomy"] == "right_lung")
    assert right["caption"] == "no right effusion." and right["heatmap_source"] == "sentences"
    (proposal,) = out.proposals
    assert proposal["code"] == "Lung Opacity" and proposal["anatomies"] == ["left_lung"]
    assert not (proposal["mask"] & ~_masks()["left_lung"]).any() and proposal["mask"].any()
    x0, y0, x1, y1 = proposal["box"]
    assert 90 <= x0 < x1 <= 150 and 10 <= y0 < y1 <= 100
    assert any("off the image" in p for p in out.problems)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"expected_size": (W + 1, H)}, "image_width/image_height"),
        ({"fixations": {"start": [0.0], "end": [1.0], "x": [-1], "y": [-1], "inside": [False]}}, "fixations"),
        ({"fixations": {"start": [], "end": [], "x": [], "y": []}}, "fixations"),
    ],
)
def test_unusable_recordings_say_why(change, field):
    with pytest.raises(Unusable, match=field):
        gaze_labels(_egd_input(**change), {}, GazeParams(method="custom", sigma_px=5.0))


def test_reflacx_method_without_angular_resolution_is_unusable():
    with pytest.raises(Unusable, match="ang_res_x/ang_res_y: method reflacx"):
        gaze_labels(_egd_input(), {}, GazeParams(method="reflacx"))


def test_params_are_checked_by_field():
    with pytest.raises(ValueError, match="^lead_s:"):
        GazeParams.from_dict({"lead_s": -1})
    with pytest.raises(ValueError, match="^colour: unknown"):
        GazeParams.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="^sigma_px/sigma_deg"):
        GazeParams.from_dict({"method": "custom"})


# ------------------------------------------------------------------------------------------ project run


@pytest.fixture
def gaze_project(project, tmp_path):
    egd = write_egd(tmp_path / "egd", recordings=[EgdSpec(image_size=(400, 300), n_fixations=40)])
    reflacx = write_reflacx(
        tmp_path / "reflacx",
        recordings=[
            ReflacxSpec(image_size=(300, 360), n_fixations=30),
            ReflacxSpec(id="P102R000002", image_size=(300, 360), n_fixations=20,
                        omit_files=("timestamps_transcription.csv",)),
        ],
    )  # fmt: skip
    for root, fmt in ((egd, "egd"), (reflacx, "reflacx")):
        assert gaze_import(project=project, path=root, fmt=fmt).errors == []
    return project


def test_project_run_stores_labels_resumes_and_keeps_unusable(gaze_project, settings):
    run = gaze_run_get_or_create(project=gaze_project, params={"method": "reflacx"})
    run = gaze_run_execute(run=run, workers=1)
    assert (run.total, run.done, run.unusable, run.failed) == (3, 2, 1, 0)
    unusable = GazeLabelResult.objects.get(run=run, status="unusable")
    assert unusable.recording.source_format == "egd" and "ang_res_x/ang_res_y" in unusable.error
    bare = GazeLabelResult.objects.get(run=run, recording__external_id="P102R000002")
    assert any("transcript" in p for p in bare.problems) and bare.sentences == 0
    rec = GazeRecording.objects.get(external_id="P102R108451")
    sentences = list(GazeSentence.objects.filter(run=run, recording=rec))
    assert [s.text for s in sentences] == ["the lungs are clear.", "heart size is normal, no effusion."]
    assert sentences[1].window_start == pytest.approx(3.1 - 2.0)
    stored = GazeHeatmap.objects.get(run=run, recording=rec, kind="recording")
    expected = heatmap(rec.fixations, width=300, height=360, method="reflacx")
    np.testing.assert_array_equal(gaze_heatmap_array(stored), expected)
    assert stored.peak == pytest.approx(float(expected.max()))
    counts = (GazeHeatmap.objects.count(), GazeSentence.objects.count(), GazeLabelResult.objects.count())
    again = gaze_run_execute(run=gaze_run_get_or_create(project=gaze_project, params={"method": "reflacx"}))
    assert again.pk == run.pk and (again.done, again.unusable) == (2, 1)
    assert (
        GazeHeatmap.objects.count(),
        GazeSentence.objects.count(),
        GazeLabelResult.objects.count(),
    ) == counts


def test_egd_run_makes_anatomy_records_and_proposals(gaze_project):
    run = gaze_run_get_or_create(project=gaze_project, params={"method": "auto", "lead_s": 1.0})
    run = gaze_run_execute(run=run, workers=2, recording_ids=list(
        GazeRecording.objects.filter(source_format="egd").values_list("pk", flat=True)))  # fmt: skip
    assert (run.total, run.done) == (1, 1)
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run)}
    assert sorted(records) == ["aortic_knob", "left_lung", "mediastinum", "right_lung"]
    assert records["mediastinum"].caption == "There is cardiomegaly."
    assert records["left_lung"].caption == "Mild pulmonary vascular congestion."
    rec = GazeRecording.objects.get(source_format="egd")
    for record in records.values():
        mask = _mask(rec, record.anatomy)
        columns = (rec.fixations[k] for k in ("start", "end", "x", "y", "inside"))
        expected = sum(e - s for s, e, x, y, i in zip(*columns, strict=True) if i and mask[int(y), int(x)])
        assert record.dwell_s == pytest.approx(expected)
        with default_storage.open(record.focus_mask.name, "rb") as fh:
            assert int(np.count_nonzero(np.asarray(Image.open(fh)))) == record.focus_pixels
    proposals = list(RegionProposal.objects.filter(gaze_run=run))
    assert {p.code for p in proposals} >= {"Cardiomegaly"}
    cardio = next(p for p in proposals if p.code == "Cardiomegaly")
    assert cardio.anatomies == ["mediastinum"] and cardio.params["recording"] == rec.pk
    with default_storage.open(cardio.mask.name, "rb") as fh:
        mask = np.asarray(Image.open(fh)) > 0
    assert not (mask & ~_mask(rec, "mediastinum")).any() and mask.sum() == cardio.pixels


def _mask(rec, name):
    with default_storage.open(rec.anatomy_masks.get(name=name).file.name, "rb") as fh:
        return np.asarray(Image.open(fh)) > 0


def test_label_one_recording_replaces_its_rows(gaze_project):
    run = gaze_run_get_or_create(project=gaze_project, params={"method": "auto"})
    rec = GazeRecording.objects.get(external_id="P102R108451")
    first = gaze_label_one(run=run, recording=rec)
    n = GazeHeatmap.objects.filter(run=run).count()
    second = gaze_label_one(run=run, recording=rec)
    assert first.status == second.status == "done" and GazeHeatmap.objects.filter(run=run).count() == n == 3


def test_sentences_link_to_the_study_reports_weak_labels(project, tmp_path):
    from labeling.services import label_run_execute, label_run_get_or_create
    from studies.models import Patient, Report, Scan, Study

    patient = Patient.objects.create(
        project=project, pseudonym="P1", identity_hash="1" * 64, date_shift_days=0
    )
    study = Study.objects.create(project=project, patient=patient, study_uid="2.25.1")
    spec = ReflacxSpec(
        image_size=(300, 360), n_fixations=30,
        words=[("small", 1.0, 1.3), ("left", 1.3, 1.6), ("pleural", 1.6, 2.0), ("effusion", 2.0, 2.6),
               (".", 2.6, 2.6)],
    )  # fmt: skip
    Scan.objects.create(
        project=project, study=study, series_uid="2.25.1.1", name=spec.dicom_id, modality="CR",
        source_format="png", ndim=2, shape=[300, 360], spacing=[0.14, 0.14], affine=np.eye(4).tolist(),
        dtype="uint16", file="x.nii", source_checksum="0" * 64,
    )  # fmt: skip
    Report.objects.create(
        project=project, study=study, external_id="r1", source="text", raw_text="x", checksum="1",
        findings="Small left pleural effusion. The heart is normal in size.",
    )  # fmt: skip
    label_run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    effusion = label_run.finding_proposals.get(code="Pleural Effusion", assertion="present")
    assert (
        gaze_import(
            project=project, path=write_reflacx(tmp_path / "rf", recordings=[spec]), fmt="reflacx"
        ).errors
        == []
    )
    run = gaze_run_execute(run=gaze_run_get_or_create(project=project, params={}), workers=1)
    (sentence,) = GazeSentence.objects.filter(run=run)
    (finding,) = sentence.findings
    assert (finding["code"], finding["assertion"], finding["laterality"]) == (
        "Pleural Effusion",
        "present",
        "left",
    )
    assert finding["proposal_ids"] == [effusion.pk]
    proposals = RegionProposal.objects.filter(gaze_run=run)
    assert proposals.count() == 1
    for proposal in proposals:  # no masks: the focus is not restricted
        assert proposal.finding_id == effusion.pk and proposal.scan.name == spec.dicom_id


def test_workers_started_without_django_label_recordings(gaze_project):
    """With another thread alive the pool uses forkserver: workers import only the pure worker module."""
    import subprocess
    import sys
    import threading

    code = "import sys, labeling.gaze.worker; sys.exit(any(m.startswith('django') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        run = gaze_run_execute(run=gaze_run_get_or_create(project=gaze_project, params={}), workers=2)
    finally:
        stop.set()
    assert (run.done, run.failed) == (3, 0)

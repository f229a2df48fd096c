"""Gaze regions: FG-CXR's seven regions (UARK-AICV/FG-CXR ``fgcxr/constants.py``) built from every anatomy
source a recording can have, the upper/lower cut, sentence-to-region matching, and runs that say what a
recording lacks.

The definitions are re-stated here in plain loops (not the module's code): the regions and their order,
the cut halfway down each lung's vertical extent or at half its area, EGD-CXR's inclusive box rule (its
``DataProcessing/Validation/validation.py``: a point is inside when ``x1 <= x <= x2 and y1 <= y <= y2``,
with ``bounding_boxes.csv`` columns in the order ``x1, x2, y1, y2``), and the patient's left on the image's
right."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image, ImageDraw

from labeling.gaze import regions as rg
from labeling.gaze.heatmaps import heatmap
from labeling.gaze.labels import GazeParams, MapSpec, RecordingInput, compute_map, gaze_labels, rules_findings
from labeling.gaze.service import gaze_heatmap_array, gaze_label_one, gaze_run_execute, gaze_run_get_or_create
from labeling.models import GazeAnatomyRecord, GazeHeatmap, GazeLabelResult, GazeSentence, RegionProposal
from studies.ingest.gaze.synthetic import EgdSpec, ReflacxSpec, write_egd, write_reflacx
from studies.models import GazeRecording
from studies.services.gaze import anatomy_mask_set, gaze_import

W, H = 160, 120
FGCXR = ["heart", "left", "upper left", "lower left", "right", "upper right", "lower right"]


def _ellipse(box, width=W, height=H):
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).ellipse(box, fill=255)
    return np.asarray(image) > 0


def _anatomy():
    """Patient's left lung on the image's right, as a PA radiograph shows it."""
    return {
        "left_lung": _ellipse((92, 8, 150, 100)),
        "right_lung": _ellipse((10, 10, 68, 96)),
        "heart": _ellipse((60, 55, 110, 95)),
    }


# ------------------------------------------------------------------------------------------ definitions


def test_the_region_set_is_fg_cxrs_seven_regions_in_its_order():
    assert list(rg.FGCXR_REGIONS) == FGCXR
    masks, problems = rg.region_masks("fgcxr", _anatomy(), [], W, H)
    assert list(masks) == FGCXR and problems == []
    for side in ("left", "right"):
        upper, lower, whole = masks[f"upper {side}"], masks[f"lower {side}"], masks[side]
        assert not (upper & lower).any() and np.array_equal(upper | lower, whole)
    columns = np.flatnonzero(masks["left"].any(axis=0))
    assert columns.min() > W / 2  # the patient's left is the image's right
    with pytest.raises(ValueError, match="^regions:"):
        rg.region_masks("quadrants", _anatomy(), [], W, H)
    with pytest.raises(ValueError, match="^regions:"):
        GazeParams.from_dict({"regions": "quadrants"})


def _plain_extent(mask):
    rows = [r for r in range(mask.shape[0]) if mask[r].any()]
    line = (rows[0] + rows[-1] + 1) / 2  # halfway between the first row's top edge and the last's bottom
    upper = np.zeros_like(mask)
    for r in range(mask.shape[0]):
        if r + 0.5 < line:
            upper[r] = mask[r]
    return upper, mask & ~upper


def _plain_area(mask):
    counts = [int(mask[r].sum()) for r in range(mask.shape[0])]
    half, above = sum(counts) / 2, 0
    for r, n in enumerate(counts):
        if n and above + n >= half:
            line = r + (half - above) / n  # the row's pixels spread evenly over its height
            break
        above += n
    upper = np.zeros_like(mask)
    for r in range(mask.shape[0]):
        if r + 0.5 < line:
            upper[r] = mask[r]
    return upper, mask & ~upper


@pytest.mark.parametrize("how", ["extent", "area"])
def test_upper_and_lower_halves_restated(how):
    plain = _plain_extent if how == "extent" else _plain_area
    rng = np.random.default_rng(7)
    shapes = [_ellipse((92, 8, 150, 100)), _ellipse((10, 10, 68, 97)), np.zeros((H, W), bool)]
    shapes[2][20:31, 5:9] = True  # 11 rows: the middle row goes to the lower half (extent)
    triangle = np.zeros((H, W), bool)
    for r in range(10, 90):
        triangle[r, 40 : 40 + (r - 10) // 2 + 1] = True  # wider at the bottom: area cuts lower
    shapes.append(triangle)
    for _ in range(5):
        shapes.append(rng.random((H, W)) < rng.uniform(0.05, 0.6))
    for mask in shapes:
        upper, lower = rg.split_upper_lower(mask, how)
        want_upper, want_lower = plain(mask)
        assert np.array_equal(upper, want_upper) and np.array_equal(lower, want_lower)
    upper, lower = rg.split_upper_lower(shapes[2], "extent")
    assert np.flatnonzero(upper.any(axis=1)).tolist() == [20, 21, 22, 23, 24]
    upper, _ = rg.split_upper_lower(triangle, "area")
    extent_upper, _ = rg.split_upper_lower(triangle, "extent")
    assert upper.sum() > extent_upper.sum() and abs(int(upper.sum()) - triangle.sum() / 2) <= 80
    assert not rg.split_upper_lower(np.zeros((H, W), bool))[0].any()


def test_egd_boxes_are_inclusive_pixel_ranges():
    ys, xs = np.mgrid[0:H, 0:W]
    for x1, y1, x2, y2 in [
        (10, 20, 40, 60),
        (10.5, 0, 40.2, 59.9),
        (-5, -3, 500, 7),
        (40, 60, 10, 20),
        (3, 3, 3, 3),
    ]:
        lo_x, hi_x = sorted((x1, x2))
        lo_y, hi_y = sorted((y1, y2))
        want = (lo_x <= xs) & (xs <= hi_x) & (lo_y <= ys) & (ys <= hi_y)
        assert np.array_equal(rg.box_mask([x1, y1, x2, y2], W, H), want)


# ------------------------------------------------------------------------------------------ sources


def _box(name, x1, y1, x2, y2):
    return {"name": name, "box": [x1, y1, x2, y2]}


def test_each_organ_comes_from_its_best_source_and_weak_sources_are_said():
    anatomy = _anatomy()
    model_heart = _ellipse((58, 50, 112, 98))
    boxes = [_box("left lung", 90, 5, 152, 102), _box("right_lung", 8, 8, 70, 98),
             _box("cardiac silhouette", 55, 50, 115, 99)]  # fmt: skip
    masks, problems = rg.region_masks(
        "fgcxr",
        {**anatomy, "model/heart": model_heart, "model/left_lung": ~anatomy["left_lung"]},
        boxes,
        W,
        H,
    )
    assert np.array_equal(masks["left"], anatomy["left_lung"])  # a stored mask beats the model's
    assert np.array_equal(masks["heart"], anatomy["heart"]) and problems == []
    partial = {"left_lung": anatomy["left_lung"], "model/heart": model_heart}
    masks, problems = rg.region_masks("fgcxr", partial, boxes, W, H)
    assert np.array_equal(masks["heart"], model_heart)
    assert np.array_equal(masks["right"], rg.box_mask([8, 8, 70, 98], W, H))
    assert problems == [
        "regions fgcxr: right_lung from bounding box 'right lung'; heart from anatomy model heart "
        "(coarser than an organ mask)"
    ]
    zones = [_box("left upper lung zone", 90, 5, 150, 40), _box("left lower lung zone", 92, 70, 152, 100),
             _box("left mid lung zone", 91, 40, 151, 70),
             _box("cardiac silhouette", 55, 50, 115, 99)]  # fmt: skip
    masks, problems = rg.region_masks("fgcxr", {"mediastinum": anatomy["heart"]}, zones, W, H)
    assert list(masks) == ["heart", "left", "upper left", "lower left"]
    union = [rg.box_mask(b["box"], W, H) for b in zones[:3]]
    assert np.array_equal(masks["left"], union[0] | union[1] | union[2])
    assert np.array_equal(masks["heart"], rg.box_mask([55, 50, 115, 99], W, H))  # the box before mediastinum
    assert problems[0].startswith(
        "regions fgcxr: no right, upper right, lower right (right: no right_lung mask"
    )
    egd_masks = {"mediastinum": anatomy["heart"], "aortic_knob": anatomy["heart"]}
    masks, problems = rg.region_masks("fgcxr", egd_masks, [], W, H)
    assert list(masks) == ["heart"] and "heart from mask mediastinum" in problems[1]
    assert "left: no left_lung mask" in problems[0]
    masks, problems = rg.region_masks("fgcxr", {}, [_box("left clavicle", 90, 0, 150, 10)], W, H)
    assert masks == {} and problems == [
        "regions fgcxr: the recording has no anatomy (no left_lung, right_lung or heart mask, no anatomy "
        "model's mask on its scan, no EGD-CXR bounding boxes): no region records; upload masks or run an "
        "anatomy model on its scan"
    ]
    masks, problems = rg.region_masks("anatomy", {"model/left_lung": anatomy["left_lung"]}, boxes, W, H)
    assert list(masks) == ["left_lung"] and problems == []
    masks, problems = rg.region_masks("anatomy", {}, boxes, W, H)
    assert masks == {} and problems[0].startswith("anatomy: the recording has no anatomy masks")
    assert [rg.organ_of(n) for n in ("Left Lung", "lung_left", "right-lung", "Heart", "spine")] == [
        "left_lung", "left_lung", "right_lung", "heart", ""]  # fmt: skip


# ------------------------------------------------------------------------------------------ sentences

SENTENCES = [
    # FG-CXR's historical data code gives each region's heatmap its region name as the text
    # (heatmap_predictor/IAI/.../register_iai_e2e_v2.py: ``res["transcript"] = type``).
    *[(name, [name]) for name in FGCXR],
    ("The upper left lung is clear.", ["upper left"]),
    ("Lower right: no opacity.", ["lower right"]),
    ("Left upper lobe opacity.", ["upper left"]),
    ("left upper and lower lobes are clear", ["upper left", "lower left"]),
    ("Opacities in the right upper and left lower lobes.", ["lower left", "upper right"]),
    ("Right upper lobe opacity, the bases are clear.", ["lower left", "upper right", "lower right"]),
    ("Bibasilar atelectasis.", ["lower left", "lower right"]),
    ("Biapical pleural thickening.", ["upper left", "upper right"]),
    ("Bilateral lower lobe opacities.", ["lower left", "lower right"]),
    ("upper lobes bilaterally", ["upper left", "upper right"]),
    ("Right apical pneumothorax.", ["upper right"]),
    ("Apical pleural thickening on the right.", ["upper right"]),
    ("Increased opacity at the left lung base.", ["lower left"]),
    ("Blunting of the right costophrenic angle.", ["lower right"]),
    ("Retrocardiac opacity.", ["lower left"]),
    ("opacity in the lingula", ["left"]),
    ("right middle lobe pneumonia", ["right"]),
    ("Small left-sided pleural effusion.", ["left"]),
    ("No left or right effusion.", ["left", "right"]),
    ("The heart size is normal and the lungs are clear.", ["heart", "left", "right"]),
    ("No pleural effusion or pneumothorax.", ["left", "right"]),
    ("Mild pulmonary edema.", ["left", "right"]),
    ("Lung volumes are low.", ["left", "right"]),
    ("No acute cardiopulmonary process.", ["heart", "left", "right"]),
    ("Mild cardiomegaly with left basilar atelectasis.", ["heart", "lower left"]),
    ("Cardiomediastinal silhouette is normal.", ["heart"]),
    ("The left heart border is obscured.", ["heart"]),
    ("Left ventricular enlargement.", ["heart"]),
    ("Right IJ catheter tip in the SVC.", []),
    ("Right upper extremity PICC ends in the SVC.", []),
    ("Right upper quadrant clips.", []),
    ("Lower thoracic spine degenerative change.", []),
    ("The catheter was left in place.", []),
    ("There is an opacity.", []),
]


@pytest.mark.parametrize(("text", "want"), SENTENCES)
def test_sentences_name_regions(text, want):
    assert rg.fgcxr_regions_named(text) == want


def test_assignment_by_words_then_by_gaze_among_heart_left_right():
    shares = {"heart": 0.1, "left": 0.7, "upper left": 0.65, "lower left": 0.05, "right": 0.2,
              "upper right": 0.1, "lower right": 0.1}  # fmt: skip
    assert rg.assign("fgcxr", "left upper lobe opacity", shares, min_share=0.5) == (["upper left"], "words")
    assert rg.assign("fgcxr", "there is an opacity", shares, min_share=0.5) == (["left"], "gaze")
    assert rg.assign("fgcxr", "there is an opacity", shares, min_share=0.8) == ([], "")
    no_heart = {k: v for k, v in shares.items() if k != "heart"}
    assert rg.assign("fgcxr", "the heart is enlarged", no_heart, min_share=0.5) == (["left"], "gaze")
    assert rg.assign("anatomy", "small right pleural effusion", {"right_lung": 0.1}, min_share=0.5) == (
        ["right_lung"], "words")  # fmt: skip


# ------------------------------------------------------------------------------------------ one recording


def _fix(points):
    cols = list(zip(*points, strict=True))
    return {"start": list(cols[0]), "end": list(cols[1]), "x": list(cols[2]), "y": list(cols[3]),
            "inside": [True] * len(points)}  # fmt: skip


def test_recording_labels_per_fgcxr_region():
    fix = _fix([(0.0, 0.6, 120, 20), (0.7, 1.5, 125, 25), (1.6, 2.0, 40, 80), (2.5, 3.5, 85, 75),
                (3.6, 4.0, 30, 40), (4.2, 5.0, 118, 90)])  # fmt: skip
    words = [
        ("Left", 1.0, 1.2),
        ("upper", 1.2, 1.5),
        ("lobe", 1.5, 1.7),
        ("opacity", 1.7, 2.0),
        (".", 2.0, 2.0),
        ("Heart", 3.6, 3.7),
        ("size", 3.7, 3.8),
        ("is", 3.8, 3.85),
        ("normal", 3.85, 4.0),
        (".", 4.0, 4.0),
    ]
    transcript = [{"text": t, "start": a, "end": b} for t, a, b in words]
    rec = RecordingInput(external_id="x", source_format="reflacx", width=W, height=H, fixations=fix,
                         transcript=transcript)  # fmt: skip
    params = GazeParams(method="custom", sigma_px=6.0, lead_s=1.0, regions="fgcxr")
    out = gaze_labels(rec, _anatomy(), params, rules_findings)
    assert [s["anatomies"] for s in out.sentences] == [["upper left"], ["heart"]]
    records = {r["anatomy"]: r for r in out.anatomy}
    assert sorted(records) == sorted(FGCXR) and out.problems == []
    assert records["upper left"]["caption"] == "Left upper lobe opacity."
    assert records["heart"]["sentence_indexes"] == [1] and records["left"]["sentence_indexes"] == []
    masks, _ = rg.region_masks("fgcxr", _anatomy(), [], W, H)
    inside = [i for i, (x, y) in enumerate(zip(fix["x"], fix["y"], strict=True)) if masks["lower left"][y, x]]
    assert inside == [5] and records["lower left"]["dwell_s"] == pytest.approx(0.8)
    spec = out.maps[records["lower left"]["map"]].spec
    assert (
        spec.mask == "lower left" and records["lower left"]["heatmap_source"] == "fixations inside the mask"
    )
    only = {k: [v[i] for i in inside] for k, v in fix.items()}
    np.testing.assert_array_equal(
        compute_map(rec, spec, masks, params), heatmap(only, width=W, height=H, method="custom", sigma_px=6.0)
    )
    (proposal,) = out.proposals
    assert proposal["code"] == "Lung Opacity" and proposal["anatomies"] == ["upper left"]
    assert proposal["mask"].any() and not (proposal["mask"] & ~masks["upper left"]).any()
    bare = gaze_labels(rec, {}, params, rules_findings)
    assert bare.anatomy == [] and bare.proposals[0]["anatomies"] == []
    assert any(p.startswith("regions fgcxr: the recording has no anatomy") for p in bare.problems)


# ------------------------------------------------------------------------------------------ project runs


def _png(mask):
    out = io.BytesIO()
    Image.fromarray(mask).convert("1").save(out, format="PNG")
    return out.getvalue()


REFLACX_WORDS = [("left", 1.0, 1.2), ("upper", 1.2, 1.5), ("lobe", 1.5, 1.8), ("opacity", 1.8, 2.2),
                 (".", 2.2, 2.2), ("heart", 3.0, 3.3), ("is", 3.3, 3.4), ("normal", 3.4, 3.8),
                 (".", 3.8, 3.8)]  # fmt: skip


@pytest.mark.django_db
def test_run_builds_regions_from_every_source_and_names_what_is_lacking(project, tmp_path):
    boxes = [("cardiac silhouette", 60, 110, 55, 95), ("left clavicle", 95, 140, 2, 12)]  # x1, x2, y1, y2
    egd = EgdSpec(dicom_id="egd1", image_size=(W, H), n_fixations=30, boxes=boxes)
    reflacx = ReflacxSpec(
        id="P102R000001", dicom_id="dcm1", image_size=(W, H), n_fixations=30, words=REFLACX_WORDS
    )
    assert (
        gaze_import(project=project, path=write_egd(tmp_path / "e", recordings=[egd]), fmt="egd").errors == []
    )
    path = write_reflacx(tmp_path / "r", recordings=[reflacx])
    assert gaze_import(project=project, path=path, fmt="reflacx").errors == []
    run = gaze_run_execute(
        run=gaze_run_get_or_create(project=project, params={"regions": "fgcxr"}), workers=1
    )
    assert (run.total, run.done, run.unusable, run.failed) == (2, 2, 0, 0)
    egd_rec = GazeRecording.objects.get(external_id="egd1")
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run, recording=egd_rec)}
    assert sorted(records) == sorted(FGCXR)
    result = GazeLabelResult.objects.get(run=run, recording=egd_rec)
    assert (
        "regions fgcxr: heart from bounding box 'cardiac silhouette' (coarser than an organ mask)"
        in result.problems
    )
    # the heart is EGD-CXR's box x1=60, x2=110, y1=55, y2=95 (columns in that order), bounds inclusive
    xs, ys = egd_rec.fixations["x"], egd_rec.fixations["y"]
    inside = [60 <= x <= 110 and 55 <= y <= 95 for x, y in zip(xs, ys, strict=True)]
    assert records["heart"].fixation_count == sum(inside) > 0
    for record in records.values():
        stored = GazeHeatmap.objects.get(pk=record.heatmap_id)
        assert stored.anatomy == record.anatomy
        assert gaze_heatmap_array(stored).shape == (H, W)

    # A REFLACX recording has no anatomy: labelled, and the result says what it lacks.
    rec = GazeRecording.objects.get(external_id="P102R000001")
    bare = GazeLabelResult.objects.get(run=run, recording=rec)
    assert bare.status == "done" and bare.sentences == 2
    assert any(p.startswith("regions fgcxr: the recording has no anatomy") for p in bare.problems)
    assert not GazeAnatomyRecord.objects.filter(run=run, recording=rec).exists()
    # ... until masks are uploaded for its image.
    anatomy = _anatomy()
    for name in ("left_lung", "right_lung", "heart"):
        anatomy_mask_set(recording=rec, name=name, data=_png(anatomy[name]))
    result = gaze_label_one(run=run, recording=rec)
    assert not any(p.startswith("regions") for p in result.problems)
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run, recording=rec)}
    assert sorted(records) == sorted(FGCXR)
    sentences = list(GazeSentence.objects.filter(run=run, recording=rec))
    assert [s.anatomies for s in sentences] == [["upper left"], ["heart"]]
    assert records["upper left"].caption == "left upper lobe opacity."
    for name in ("left", "lower left"):  # maps of regions without sentences: fixations inside the region
        stored = GazeHeatmap.objects.get(pk=records[name].heatmap_id)
        assert stored.mask == name
        masks, _ = rg.region_masks("fgcxr", anatomy, [], W, H)
        source = RecordingInput(external_id=rec.external_id, source_format="reflacx", width=W, height=H,
                                fixations=rec.fixations)  # fmt: skip
        np.testing.assert_array_equal(
            gaze_heatmap_array(stored),
            compute_map(
                source, MapSpec(kind="anatomy", mask=name), masks, GazeParams(regions="fgcxr")
            ),  # fmt: skip
        )
    out = io.StringIO()
    call_command("gaze_labels", "--project", project.slug, "--regions", "fgcxr", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["run"] == run.pk and summary["params"]["regions"] == "fgcxr"  # the same run, resumed
    default = gaze_run_execute(run=gaze_run_get_or_create(project=project, params={}), workers=1)
    names = set(
        GazeAnatomyRecord.objects.filter(run=default, recording=rec).values_list("anatomy", flat=True)
    )
    assert names == {"left_lung", "right_lung", "heart"}


# ------------------------------------------------------------------------------------------ anatomy model

LEVELS = {"left_lung": 51, "right_lung": 115, "heart": 178}  # 8-bit grey of each organ; background 230


@pytest.mark.django_db
def test_an_anatomy_model_on_the_linked_radiograph_gives_the_regions(project, tmp_path):
    import torch

    from ml.models import ModelStatus, ModelVersion
    from ml.preannotate import preannotate
    from ml.services import model_version_register
    from studies.services.scans import scans_ingest

    class ByGrey(torch.nn.Module):
        """Each pixel to the organ of the nearest grey level (a model with a known answer)."""

        def forward(self, x):
            centres = torch.tensor([230.0, 51.0, 115.0, 178.0]).view(1, 4, 1, 1) / 255.0
            return -400.0 * (x - centres) ** 2

    anatomy = _anatomy()
    picture = np.full((H, W), 230, np.uint8)
    for organ in ("left_lung", "right_lung", "heart"):
        picture[anatomy[organ]] = LEVELS[organ]
    spec = ReflacxSpec(
        id="P102R000009", dicom_id="cxr9", image_size=(W, H), n_fixations=30, words=REFLACX_WORDS
    )
    (tmp_path / "img").mkdir()
    Image.fromarray(picture).save(tmp_path / "img" / "cxr9.png")
    assert scans_ingest(project=project, paths=[tmp_path / "img"], workers=1).errors == []
    assert (
        gaze_import(
            project=project, path=write_reflacx(tmp_path / "r", recordings=[spec]), fmt="reflacx"
        ).errors
        == []
    )
    rec = GazeRecording.objects.get(external_id="P102R000009")
    assert rec.scan is not None
    weights = tmp_path / "anatomy.ts"
    torch.jit.save(torch.jit.script(ByGrey()), weights)
    version = model_version_register(
        project=project, path=weights, fmt="torchscript", name="cxr-anatomy", task="anatomy",
        input_spec={"ndim": 2, "channels": 1, "roi_size": [64, 64], "window": [0, 255]},
        label_names=["background", "left_lung", "right_lung", "heart"], validate=False,
    )  # fmt: skip
    # Validation (a forward pass in a child interpreter) is tested in tests/ml/test_registry.py.
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.READY)
    outcome = preannotate(scan=rec.scan, generator="model:cxr-anatomy")
    assert sorted(p.label for p in outcome.proposals) == ["heart", "left_lung", "right_lung"]
    run = gaze_run_execute(
        run=gaze_run_get_or_create(project=project, params={"regions": "fgcxr"}), workers=1
    )
    result = GazeLabelResult.objects.get(run=run, recording=rec)
    assert result.status == "done"
    assert (
        "regions fgcxr: left_lung from anatomy model left_lung; right_lung from anatomy model right_lung; "
        "heart from anatomy model heart (coarser than an organ mask)"
    ) in result.problems
    records = {r.anatomy: r for r in GazeAnatomyRecord.objects.filter(run=run, recording=rec)}
    assert sorted(records) == sorted(FGCXR)
    masks, _ = rg.region_masks("fgcxr", anatomy, [], W, H)
    inside = sum(
        bool(masks["lower right"][y, x]) for x, y in zip(rec.fixations["x"], rec.fixations["y"], strict=True)
    )
    assert records["lower right"].fixation_count == inside
    assert RegionProposal.objects.filter(scan=rec.scan, source="model").count() == 3

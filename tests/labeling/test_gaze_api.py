"""Gaze label endpoints and the gaze_labels command: a project job, one recording synchronously, heatmap
arrays and PNGs, anatomy records, proposals, anatomy masks from annotation; roles and other projects."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from labeling.gaze.heatmaps import heatmap
from labeling.models import GazeHeatmap, GazeLabelRun
from studies.ingest.gaze.synthetic import EgdSpec, ReflacxSpec, write_egd, write_reflacx
from studies.models import GazeRecording
from studies.services.gaze import anatomy_mask_set, gaze_import


@pytest.fixture
def recordings(project, tmp_path):
    egd = write_egd(tmp_path / "egd", recordings=[EgdSpec(image_size=(400, 300), n_fixations=40)])
    reflacx = write_reflacx(tmp_path / "rf", recordings=[ReflacxSpec(image_size=(300, 360), n_fixations=30)])
    for root, fmt in ((egd, "egd"), (reflacx, "reflacx")):
        assert gaze_import(project=project, path=root, fmt=fmt).errors == []
    return {r.source_format: r for r in GazeRecording.objects.all()}


def test_project_job_then_lists_and_files(
    project, manager, annotator, outsider, api_client, recordings, django_capture_on_commit_callbacks
):
    client = api_client(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("gaze-label-runs", args=[project.slug]), {"params": {"lead_s": 1.0}},
                               format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    detail = client.get(reverse("gaze-label-run-detail", args=[run_id])).json()
    assert detail["status"] == "succeeded" and detail["done"] == 2 and detail["progress"] == 1.0
    assert detail["job_id"] and detail["params"]["method"] == "auto"
    results = client.get(reverse("gaze-label-run-results", args=[run_id])).json()["results"]
    assert {r["status"] for r in results} == {"done"}

    rf = recordings["reflacx"]
    maps = client.get(reverse("gaze-heatmap-list"), {"run": run_id, "recording": rf.pk, "kind": "recording"})
    (entry,) = maps.json()["results"]
    raw = client.get(reverse("gaze-heatmap-array", args=[entry["id"]]))
    array = np.load(io.BytesIO(raw.content))
    expected = heatmap(rf.fixations, width=300, height=360, method="reflacx")
    assert array.dtype == np.float32 and array.shape == (360, 300)
    np.testing.assert_array_equal(array, expected)
    color = Image.open(io.BytesIO(client.get(reverse("gaze-heatmap-png", args=[entry["id"]])).content))
    assert color.size == (300, 360) and color.mode == "RGB"
    gray = client.get(reverse("gaze-heatmap-png", args=[entry["id"]]), {"style": "gray"})
    gray_image = np.asarray(Image.open(io.BytesIO(gray.content)))
    assert gray_image.max() == 255 and np.array_equal(gray_image, np.rint(expected / expected.max() * 255))

    sentences = client.get(reverse("gaze-sentence-list"), {"run": run_id, "recording": rf.pk}).json()[
        "results"
    ]
    assert [s["text"] for s in sentences] == ["the lungs are clear.", "heart size is normal, no effusion."]
    records = client.get(reverse("anatomy-record-list"), {"run": run_id, "anatomy": "mediastinum"}).json()
    (record,) = records["results"]
    assert record["caption"] == "There is cardiomegaly." and record["dwell_s"] > 0
    focus = client.get(reverse("anatomy-focus-png", args=[record["id"]]))
    assert (
        np.count_nonzero(np.asarray(Image.open(io.BytesIO(b"".join(focus.streaming_content)))))
        == record["focus_pixels"]
    )
    proposals = client.get(
        reverse("region-proposal-list"), {"project": project.slug, "source": "gaze"}
    ).json()
    assert proposals["count"] >= 1
    first = proposals["results"][0]
    mask_png = client.get(reverse("region-proposal-mask", args=[first["id"]]))
    assert (
        np.count_nonzero(np.asarray(Image.open(io.BytesIO(b"".join(mask_png.streaming_content)))))
        == first["pixels"]
    )

    assert (
        api_client(annotator)
        .post(reverse("gaze-label-runs", args=[project.slug]), {}, format="json")
        .status_code
        == 403
    )
    assert api_client(outsider).get(reverse("gaze-label-run-detail", args=[run_id])).status_code == 404
    assert api_client(outsider).get(reverse("gaze-heatmap-array", args=[entry["id"]])).status_code == 404
    assert api_client(outsider).get(reverse("region-proposal-list")).json()["count"] == 0
    bad = client.post(
        reverse("gaze-label-runs", args=[project.slug]), {"params": {"lead_s": "soon"}}, format="json"
    )
    assert bad.status_code == 400 and "lead_s: must be a number" in str(bad.json()["params"])
    unknown = client.post(
        reverse("gaze-label-runs", args=[project.slug]), {"recording_ids": [99999]}, format="json"
    )
    assert unknown.status_code == 400 and "recording_ids" in unknown.json()
    assert GazeLabelRun.objects.count() == 1


def test_one_recording_synchronously_and_unusable_answer(project, manager, api_client, recordings):
    client = api_client(manager)
    url = reverse("gaze-labels-one", args=[recordings["reflacx"].pk])
    body = client.post(url, {"params": {"method": "reflacx"}}, format="json").json()
    assert body["result"]["status"] == "done" and len(body["sentences"]) == 2 and len(body["heatmaps"]) == 3
    again = client.post(url, {"params": {"method": "reflacx"}}, format="json").json()
    assert again["run"]["id"] == body["run"]["id"] and len(again["heatmaps"]) == 3
    egd_url = reverse("gaze-labels-one", args=[recordings["egd"].pk])
    egd = client.post(egd_url, {"params": {"method": "reflacx"}}, format="json").json()
    assert egd["result"]["status"] == "unusable" and "ang_res_x" in egd["result"]["error"]


def test_anatomy_mask_from_annotation(project, annotator, api_client, recordings):
    client = api_client(annotator)
    rf = recordings["reflacx"]
    url = reverse("anatomy-mask-upload", args=[rf.pk])

    def png(width, height, fill=True):
        image = np.zeros((height, width), np.uint8)
        if fill:
            image[50:200, 20:140] = 255
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        out.seek(0)
        out.name = "right.png"
        return out

    made = client.post(url, {"name": "right_lung", "file": png(300, 360)}, format="multipart")
    assert made.status_code == 201 and made.json()["pixel_count"] == 150 * 120
    wrong = client.post(url, {"name": "right_lung", "file": png(200, 360)}, format="multipart")
    assert (
        wrong.status_code == 400 and "right.png" in wrong.json()["file"] and "300x360" in wrong.json()["file"]
    )
    empty = client.post(url, {"name": "right_lung", "file": png(300, 360, fill=False)}, format="multipart")
    assert empty.status_code == 400 and "empty" in empty.json()["file"]
    bad_name = client.post(url, {"name": "../x", "file": png(300, 360)}, format="multipart")
    assert bad_name.status_code == 400 and "name" in bad_name.json()
    assert rf.anatomy_masks.get().name == "right_lung"
    replaced = client.post(url, {"name": "right_lung", "file": png(300, 360)}, format="multipart")
    assert replaced.status_code == 201 and rf.anatomy_masks.count() == 1


def test_gaze_labels_command_reports_unusable_recordings(project, recordings, capsys):
    call_command("gaze_labels", "--project", project.slug, "--method", "reflacx", "--json", "--workers", "1")
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recordings"], summary["done"], summary["unusable"]) == (2, 1, 1)
    (bad,) = summary["not_labelled"]
    assert bad["external_id"] == recordings["egd"].external_id and "ang_res_x" in bad["reason"]
    call_command("gaze_labels", "--project", project.slug, "--method", "reflacx")
    assert "1 of 2 recordings labelled, 1 unusable" in capsys.readouterr().out
    assert GazeLabelRun.objects.count() == 1


def test_heatmap_of_any_time_window_now(project, annotator, outsider, api_client, recordings):
    rf = recordings["reflacx"]
    url = reverse("gaze-recording-heatmap", args=[rf.pk])
    client = api_client(annotator)
    window = np.load(io.BytesIO(client.get(url, {"start": 1.0, "end": 4.0}).content))
    expected = heatmap(rf.fixations, width=300, height=360, method="reflacx", start=1.0, end=4.0)
    np.testing.assert_allclose(window, expected, rtol=1e-5, atol=0)
    whole = np.load(io.BytesIO(client.get(url).content))
    np.testing.assert_array_equal(whole, heatmap(rf.fixations, width=300, height=360, method="reflacx"))
    custom = np.load(
        io.BytesIO(client.get(url, {"method": "custom", "sigma_px": 12, "normalise": "max"}).content)
    )
    assert custom.max() == pytest.approx(1.0)
    png = client.get(url, {"output": "png", "start": 1.0})
    assert png["Content-Type"] == "image/png" and Image.open(io.BytesIO(png.content)).size == (300, 360)
    backwards = client.get(url, {"start": 5, "end": 1})
    assert backwards.status_code == 400 and "start" in backwards.json()
    no_angle = client.get(
        reverse("gaze-recording-heatmap", args=[recordings["egd"].pk]), {"method": "reflacx"}
    )
    assert no_angle.status_code == 400 and "ang_res_x" in str(no_angle.json())
    assert api_client(outsider).get(url).status_code == 404


def test_heatmap_png_revalidates_with_its_etag(
    project, manager, api_client, recordings, monkeypatch, django_capture_on_commit_callbacks
):
    """A heatmap's PNG carries an ETag: asked again with it, the answer is a 304 without the map being
    computed; another style or a replaced anatomy mask (for a map inside an anatomy) is a new tag."""
    from labeling.api import gaze as gaze_api

    client = api_client(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("gaze-label-runs", args=[project.slug]), {}, format="json")
    assert response.status_code == 202, response.content
    rf = recordings["reflacx"]
    whole = GazeHeatmap.objects.get(recording=rf, kind="recording")
    url = reverse("gaze-heatmap-png", args=[whole.pk])
    first = client.get(url)
    tag = first["ETag"]
    assert first.status_code == 200 and first["Cache-Control"] == "private, no-cache" and len(tag) > 8
    computed = []
    real = gaze_api.gaze_heatmap_array
    monkeypatch.setattr(
        gaze_api, "gaze_heatmap_array", lambda found: computed.append(found.pk) or real(found)
    )

    again = client.get(url, HTTP_IF_NONE_MATCH=tag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == tag and computed == []
    gray = client.get(url, {"style": "gray"}, HTTP_IF_NONE_MATCH=tag)
    assert gray.status_code == 200 and gray["ETag"] != tag and computed == [whole.pk]

    masked = GazeHeatmap.objects.exclude(mask="").select_related("recording").first()
    assert masked is not None, "the run made no heatmap inside an anatomy mask"
    rf = masked.recording
    masked_url = reverse("gaze-heatmap-png", args=[masked.pk])
    before = client.get(masked_url)["ETag"]
    assert client.get(masked_url, HTTP_IF_NONE_MATCH=before).status_code == 304
    target = rf.anatomy_masks.first()
    with target.file.open("rb") as stored:
        anatomy_mask_set(recording=rf, name=target.name, data=stored.read())
    changed = client.get(masked_url, HTTP_IF_NONE_MATCH=before)
    assert changed.status_code == 200 and changed["ETag"] != before

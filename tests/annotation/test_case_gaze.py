"""The case payload's gaze part: a radiograph whose gaze recording a real gaze label run labelled comes with
its transcript's sentences (times, gaze window, the findings each states and the study's findings they are
tied to), its anatomies (dwell, share) and a heatmap PNG for each and for the whole recording, in a fixed
number of queries; before any run the recording says how to start one."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.api.case_gaze import _tied, case_gaze_payload
from annotation.models import Finding
from core.models import Role
from core.services import membership_set
from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
from tests.annotation.gaze_case import LOOKS, gaze_radiograph_case


@pytest.fixture
def ann(make_user, project):
    user = make_user("ann")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


def _case(client, project, code: str) -> dict:
    task = Finding.objects.get(project=project, code=code).task
    response = client.post(reverse("task-claim", args=[task.pk]))
    assert response.status_code == 200, response.content
    return response.json()


def test_the_case_lists_the_gaze_runs_sentences_and_anatomies_with_their_heatmaps(
    project, tmp_path, ann, outsider, api_client
):
    # Given a radiograph whose gaze recording the platform's gaze label run labelled.
    scan, recording = gaze_radiograph_case(project, tmp_path)
    client = api_client(ann)

    # When the annotator opens the cardiomegaly finding.
    case = _case(client, project, "Cardiomegaly")

    # Then its gaze recording comes with the run's three sentences, in order, with their times.
    [gaze] = case["gaze"]
    assert gaze["id"] == recording.pk and gaze["reader"] == recording.reader and gaze["labels_note"] == ""
    labels = gaze["labels"]
    assert labels["preset"] == "platform" and labels["lead_s"] == 2.0
    sentences = labels["sentences"]
    assert [s["index"] for s in sentences] == [0, 1, 2]
    assert sentences[0]["text"].lower().startswith("the heart is enlarged")
    assert "pleural effusion" in sentences[1]["text"].lower()
    assert (sentences[0]["start"], sentences[0]["end"]) == (0.8, 2.0)
    assert sentences[0]["window"] == [0.8 - 2.0, 2.0]  # gaze leads speech by lead_s
    # each sentence its own heatmap, the whole recording one more
    pngs = [s["heatmap_png"] for s in sentences] + [labels["recording"]["heatmap_png"]]
    assert all(p and p.startswith("/api/gaze-heatmaps/") and p.endswith("/png/") for p in pngs)
    assert len(set(pngs)) == 4

    # The first sentence states cardiomegaly, the second the effusion: each is tied to that finding.
    heart = Finding.objects.get(project=project, code="Cardiomegaly")
    effusion = Finding.objects.get(project=project, code="Pleural Effusion")
    assert case["finding"]["id"] == heart.pk
    assert sentences[0]["finding_ids"] == [heart.pk]
    assert sentences[1]["finding_ids"] == [effusion.pk]
    assert sentences[2]["finding_ids"] == []
    assert {"code": "Cardiomegaly", "assertion": "present"}.items() <= sentences[0]["findings"][0].items()
    assert "heart" in sentences[0]["anatomies"] and "left_lung" in sentences[1]["anatomies"]

    # The anatomies by dwell: the left lung (the whole second sentence at its base), then the heart.
    anatomies = {a["anatomy"]: a for a in labels["anatomies"]}
    assert [a["anatomy"] for a in labels["anatomies"]][:2] == ["left_lung", "heart"]
    # the heart's dwell: the first sentence's four fixations, each its share of 0.2-2.0 s less 0.05 s
    start, end, points = LOOKS[0]
    assert anatomies["heart"]["dwell_s"] == pytest.approx(len(points) * ((end - start) / len(points) - 0.05))
    assert sum(a["dwell_share"] for a in labels["anatomies"]) <= 1.0 + 1e-6
    assert anatomies["heart"]["sentence_indexes"] == [0]
    assert anatomies["heart"]["heatmap_png"] not in pngs

    # The PNGs are the heatmaps at the image's size, for members only.
    shown = client.get(sentences[0]["heatmap_png"])
    assert shown.status_code == 200 and shown["Content-Type"] == "image/png"
    assert shown.content[16:24] == (736).to_bytes(4, "big") + (782).to_bytes(4, "big")  # PNG IHDR size
    assert api_client(outsider).get(sentences[0]["heatmap_png"]).status_code == 404


def test_the_gaze_part_takes_five_queries_and_the_newest_run_that_labelled_the_recording(project, tmp_path):
    # Given a labelled recording (three sentences, three anatomies).
    gaze_radiograph_case(project, tmp_path)
    finding = Finding.objects.get(project=project, code="Cardiomegaly")
    siblings = list(Finding.objects.filter(study=finding.study))

    # When the payload's gaze part is made, then it reads the recordings, the newest results, the
    # sentences, the heatmaps and the anatomy records: one query each, however many sentences.
    with CaptureQueriesContext(connection) as seen:
        [gaze] = case_gaze_payload(finding, siblings)
    assert len(seen.captured_queries) == 5, [q["sql"] for q in seen.captured_queries]
    first_run = gaze["labels"]["run_id"]

    # A newer run (FG-CXR's preset and its seven regions) is the one shown.
    newer = gaze_run_execute(
        run=gaze_run_get_or_create(project=project, params={"preset": "fgcxr"}), workers=1
    )
    [gaze] = case_gaze_payload(finding, siblings)
    assert newer.pk > first_run and gaze["labels"]["run_id"] == newer.pk
    assert gaze["labels"]["preset"] == "fgcxr"


def test_before_any_gaze_run_the_recording_says_how_to_start_one(project, tmp_path, ann, api_client):
    gaze_radiograph_case(project, tmp_path, label=False)
    [gaze] = _case(api_client(ann), project, "Cardiomegaly")["gaze"]
    assert gaze["labels"] is None
    assert "No gaze label run" in gaze["labels_note"] and "console" in gaze["labels_note"]
    assert gaze["heatmap_png"].endswith("/heatmap/?output=png")  # the whole recording, computed now


def test_a_sentence_is_tied_to_its_proposals_finding_else_one_of_its_code_else_of_its_kind():
    # the sentences are read with CheXpert's rules; a ReXGroundingCT project's mass is "2d"
    rex_mass, effusion, other = Finding(pk=1, code="2d"), Finding(pk=2, code="2e"), Finding(pk=3, code="2d")
    rex_mass.finding_proposal_id, effusion.finding_proposal_id, other.finding_proposal_id = 10, 11, 12
    lesion = {"code": "Lung Lesion", "assertion": "present", "proposal_ids": []}
    assert _tied([lesion], [rex_mass, effusion]) == [1]
    assert _tied([{**lesion, "proposal_ids": [12]}], [rex_mass, effusion, other]) == [3]  # its own first
    assert _tied([{**lesion, "assertion": "absent"}], [rex_mass]) == []  # "no mass" states no finding
    assert _tied([{"code": "Cardiomegaly", "assertion": "present"}], [rex_mass, effusion]) == []


@pytest.mark.django_db
def test_the_demo_radiographs_case_has_its_dictation_and_the_mass_said_in_its_first_sentence(tmp_path):
    from io import StringIO

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from annotation.models import Finding, ReviewTask

    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=StringIO())
    task = ReviewTask.objects.filter(finding__scan__name="RG1_UNCR", stage="annotate").order_by("id").first()
    client = APIClient()
    client.force_login(get_user_model().objects.get(username="demo-annotator"))
    [gaze] = client.get(reverse("task-detail", args=[task.pk])).json()["gaze"]
    labels = gaze["labels"]
    assert labels["preset"] == "fgcxr"  # the newest of the demo's two runs
    assert [s["text"].lower() for s in labels["sentences"]] == [
        "multiple masses in both lungs.",
        "heart size is normal.",
        "no pleural effusion.",
    ]
    # the radiograph's masses (ReXGroundingCT 2d) are what the first sentence states (CheXpert Lung Lesion):
    # the masses finding (in review) and its largest mass, the demo's finding to draw (this task)
    masses = Finding.objects.filter(scan__name="RG1_UNCR", code="2d").order_by("id")
    assert labels["sentences"][0]["finding_ids"] == [f.pk for f in masses] and len(masses) == 2
    assert task.finding.code == "2d" and task.finding_id in labels["sentences"][0]["finding_ids"]
    assert labels["sentences"][2]["finding_ids"] == []  # "no pleural effusion" states none
    assert len(labels["anatomies"]) == 7 and "heart" in {
        a["anatomy"] for a in labels["anatomies"]
    }  # FG-CXR's

"""Releases over the API and the CLI: who may make and read them, freeze, manifest, card, diff, exports as
jobs with their files and one streamed archive, and clear errors."""

import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from core.models import Role
from tests.releases.factories import reviewed_case


@pytest.fixture
def people(make_members, project):
    return make_members(project, res=Role.RESEARCHER, ann=Role.ANNOTATOR, rad=Role.RADIOLOGIST)


def test_release_over_the_api(
    project, tmp_path, make_user, people, outsider, api_client, django_capture_on_commit_callbacks
):
    scan = reviewed_case(project, tmp_path, make_user)
    res, ann = api_client(people["res"]), api_client(people["ann"])
    body = {"slug": "lungs", "name": "Lung findings", "projects": [project.slug], "licence": "CC-BY-4.0"}
    assert ann.post(reverse("dataset-list"), body, format="json").status_code == 403
    made = res.post(reverse("dataset-list"), body, format="json")
    assert made.status_code == 201 and made.json()["projects"] == [project.slug]
    assert res.post(reverse("dataset-list"), body, format="json").json() == {
        "detail": "a dataset 'lungs' exists already",
        "field": "slug",
        "slug": "a dataset 'lungs' exists already",
    }
    assert [d["slug"] for d in api_client(outsider).get(reverse("dataset-list")).json()["results"]] == []
    assert api_client(outsider).get(reverse("dataset-detail", args=["lungs"])).status_code == 404

    bad = res.post(reverse("dataset-releases", args=["lungs"]), {"sources": "gaze"}, format="json")
    assert bad.status_code == 400 and "sources" in bad.json()
    with django_capture_on_commit_callbacks(execute=True):
        v1 = res.post(reverse("dataset-releases", args=["lungs"]), {}, format="json")
    assert v1.status_code == 202, v1.content
    assert v1.json()["status"] == "building" and v1.json()["version"] == 1
    release = res.get(reverse("release-detail", args=[v1.json()["id"]])).json()
    assert release["status"] == "frozen" and release["job"]["status"] == "succeeded"
    assert release["version"] == 1 and release["counts"]["cases"] == 1
    manifest = json.loads(
        b"".join(res.get(reverse("release-manifest", args=[release["id"]])).streaming_content)
    )
    assert manifest["cases"][0]["scan"] == scan.pk
    card = res.get(reverse("release-card", args=[release["id"]]))
    assert card["Content-Type"].startswith("text/markdown") and b"CC-BY-4.0" in card.content
    with django_capture_on_commit_callbacks(execute=True):
        v2 = res.post(reverse("dataset-releases", args=["lungs"]), {"sources": "both"}, format="json").json()
    empty = res.post(reverse("dataset-releases", args=["lungs"]), {"statuses": ["open"]}, format="json")
    assert empty.status_code == 400 and "no labels to release" in empty.json()["selection"]
    diff = res.get(reverse("release-diff", args=[v2["id"]])).json()
    assert diff["from"] == 1 and diff["labels"]["added"] and not diff["labels"]["removed"]
    assert res.get(reverse("release-diff", args=[v2["id"]]), {"against": 9}).status_code == 400

    unknown = res.post(reverse("release-exports", args=[release["id"]]), {"format": "xlsx"}, format="json")
    assert unknown.status_code == 400 and "unknown format 'xlsx'" in unknown.json()["format"]
    with django_capture_on_commit_callbacks(execute=True):
        started = res.post(
            reverse("release-exports", args=[release["id"]]), {"format": "monai"}, format="json"
        )
    assert started.status_code == 202, started.content
    export = res.get(reverse("export-detail", args=[started.json()["id"]])).json()
    assert export["status"] == "succeeded" and export["job"]["status"] == "succeeded", export
    sums = b"".join(res.get(reverse("export-file", args=[export["id"], "SHA256SUMS"])).streaming_content)
    listed = dict(line.split("  ")[::-1] for line in sums.decode().splitlines())
    assert {"dataset.json", "README.md", "manifest.json"} <= set(listed)
    assert export["file_count"] == len(listed) + 1 and export["bytes"] > 0
    one = res.get(reverse("export-file", args=[export["id"], "dataset.json"]))
    datalist = json.loads(b"".join(one.streaming_content))
    assert datalist["training"]
    assert res.get(reverse("export-file", args=[export["id"], "../secret"])).status_code == 404
    archive = res.get(reverse("export-archive", args=[export["id"]]))
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as z:
        names = z.namelist()
        assert z.testzip() is None and len(names) == export["file_count"]
        for name, digest in listed.items():  # every file in the archive is the one SHA256SUMS names
            assert hashlib.sha256(z.read(f"lungs-v1-monai/{name}")).hexdigest() == digest
        assert json.loads(z.read("lungs-v1-monai/dataset.json")) == datalist
    assert api_client(outsider).get(reverse("export-detail", args=[export["id"]])).status_code == 404


def test_release_cli(project, tmp_path, make_user, capsys):
    with pytest.raises(CommandError, match="--project: dataset 'cli' is new"):
        call_command("release_create", "--dataset", "cli")
    reviewed_case(project, tmp_path, make_user)
    call_command("release_create", "--dataset", "cli", "--project", project.slug, "--json")
    made = json.loads(capsys.readouterr().out)
    assert made["version"] == 1 and made["counts"]["labels_per_source"] == {"human": 1}
    out = tmp_path / "export"
    call_command("release_export", "--dataset", "cli", "--format", "rexgroundingct", "--out", str(out))
    assert (out / "dataset.json").exists() and (out / "README.md").exists()
    assert (out / "segmentations").is_dir() and "1 cases" in capsys.readouterr().out
    with pytest.raises(CommandError, match="--out: .* is not empty"):
        call_command("release_export", "--dataset", "cli", "--format", "monai", "--out", str(out))
    with pytest.raises(CommandError, match="--format: unknown format 'png'"):
        call_command("release_export", "--dataset", "cli", "--format", "png", "--out", str(tmp_path / "e"))
    with pytest.raises(CommandError, match="--dataset: 'cli' has no version 4"):
        call_command(
            "release_export", "--dataset", "cli", "--release-version", "4", "--format", "monai", "--out", "x"
        )

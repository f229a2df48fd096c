"""Releases: freezing a selection into a manifest with checksums and provenance, patient splits that
stay put across versions, diffs, the dataset card, exports and their checks."""

import json

import numpy as np
import pytest
from django.core.files.storage import default_storage

from annotation.models import Finding
from releases.models import ReleaseCase, ReleaseLabel
from releases.records import DirSink
from releases.services import (
    ReleaseError,
    dataset_create,
    release_cases,
    release_create,
    release_diff,
    release_export_to,
    release_manifest,
)
from tests.releases.factories import reviewed_case


@pytest.fixture
def reviewed(project, tmp_path, make_user):
    return reviewed_case(project, tmp_path, make_user)


def test_freeze_accepted_labels_with_checksums_and_provenance(project, reviewed):
    dataset = dataset_create(slug="lungs", name="Lung findings", projects=[project], licence="CC-BY-4.0")
    release = release_create(dataset=dataset)
    assert release.version == 1 and release.status == "frozen"
    manifest = release_manifest(release)
    [case] = manifest["cases"]
    assert case["split"] == "train" and case["patient"] == reviewed.study.patient.pseudonym
    [label] = case["labels"]  # accepted only, human only: the rejected finding and weak labels stay out
    accepted = Finding.objects.get(project=project, status="accepted")
    assert label["label_id"] == f"finding-{accepted.pk}" and label["kind"] == "mask"
    assert label["provenance"]["author"] == f"ann-{project.slug}"
    assert label["provenance"]["reviewed_by"] == [f"rad-{project.slug}"]
    with default_storage.open(label["mask_key"], "rb") as fh:
        import hashlib

        assert hashlib.sha256(fh.read()).hexdigest() == label["mask_sha256"]
    assert release.counts["labels_per_source"] == {"human": 1} and release.counts["cases"] == 1
    assert "CC-BY-4.0" in release.card and "| cases | 1 | 0 | 0 | 1 |" in release.card

    [record] = list(release_cases(release))
    mask = record.labels[0].load_mask()
    assert mask.shape == tuple(reviewed.shape) and mask.sum() == 8 * 8 * 3 + 4 * 4 * 2


def test_versions_diff_and_keep_splits(project, reviewed):
    dataset = dataset_create(slug="lungs", name="Lungs", projects=[project])
    release_create(dataset=dataset)
    v2 = release_create(dataset=dataset, selection={"statuses": ["accepted", "rejected"], "sources": "both"})
    assert v2.version == 2
    diff = release_diff(v2)
    assert diff["from"] == 1 and diff["cases"] == {"added": [], "removed": [], "split_changed": []}
    rejected = Finding.objects.get(project=project, status="rejected")
    assert f"-s{reviewed.pk}/finding-{rejected.pk}" in " ".join(diff["labels"]["added"])
    assert any("/proposal-" in x for x in diff["labels"]["added"]) and diff["labels"]["removed"] == []
    labels = ReleaseLabel.objects.filter(release=v2)
    assert labels.get(label_id=f"finding-{rejected.pk}").assertion == "absent"
    assert {lab.source for lab in labels} >= {"human", "weak"}
    ReleaseCase.objects.filter(release=v2).update(split="test")  # as if v2 had put the patient in test
    v3 = release_create(dataset=dataset, selection={"seed": 7})
    assert ReleaseCase.objects.get(release=v3).split == "test"  # a patient keeps its split
    assert release_diff(v3, v2)["labels"]["removed"]


def test_bad_selections_and_changed_files(project, other_project, reviewed, tmp_path):
    empty = dataset_create(slug="empty", name="Nothing", projects=[other_project])
    with pytest.raises(ReleaseError, match="^selection: no labels to release"):
        release_create(dataset=empty)
    dataset = dataset_create(slug="lungs", name="Lungs", projects=[project])
    with pytest.raises(ReleaseError, match="^sources: choose human, weak or both"):
        release_create(dataset=dataset, selection={"sources": "gaze"})
    with pytest.raises(ReleaseError, match="^ratios:"):
        release_create(dataset=dataset, selection={"ratios": {"train": 0.5, "val": 0.1}})
    release = release_create(dataset=dataset)
    with pytest.raises(ReleaseError, match="^format: unknown format 'nifti-zip'"):
        release_export_to(release, "nifti-zip", DirSink(tmp_path / "x"))

    image = default_storage.path(ReleaseCase.objects.get(release=release).image_key)
    with open(image, "r+b") as fh:  # one byte of the stored scan changes after the freeze
        fh.seek(400)
        byte = fh.read(1)
        fh.seek(400)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ReleaseError, match=r"^lungs.*|.*\.image: .* changed since the release was frozen"):
        list(release_cases(release))


def test_a_box_cannot_go_into_a_mask_only_format(project, tmp_path, make_user):
    reviewed_case(project, tmp_path, make_user, box=True)
    dataset = dataset_create(slug="boxes", name="Boxes", projects=[project])
    release = release_create(dataset=dataset)
    with pytest.raises(ReleaseError, match="^format: rexgroundingct holds only mask, none labels"):
        release_export_to(release, "rexgroundingct", DirSink(tmp_path / "out"))


def test_export_writes_card_and_manifest(project, reviewed, tmp_path):
    release = release_create(dataset=dataset_create(slug="lungs", name="Lungs", projects=[project]))
    sink = DirSink(tmp_path / "rex")
    summary = release_export_to(release, "rexgroundingct", sink)
    assert summary.cases == 1
    data = json.loads((tmp_path / "rex" / "dataset.json").read_text())
    readme = (tmp_path / "rex" / "README.md").read_text()  # the card, plus the format's HF configs
    head, body = release.card.split("\n---\n", 1)
    assert data and readme.startswith(head) and body.split("\n", 1)[1] in readme
    assert json.loads((tmp_path / "rex" / "manifest.json").read_text())["version"] == 1
    assert np.isfinite(summary.labels)


def test_a_freeze_job_that_fails_marks_the_release_failed(
    project, reviewed, django_capture_on_commit_callbacks
):
    from annotation.models import Annotation
    from releases.services import release_start

    dataset = dataset_create(slug="lungs", name="Lungs", projects=[project])
    mask = Annotation.objects.filter(finding__status="accepted").exclude(mask="").last().mask.name
    default_storage.delete(mask)  # the accepted mask is gone from storage before the freeze
    with django_capture_on_commit_callbacks(execute=True):
        release = release_start(dataset=dataset)
    release.refresh_from_db()
    assert release.status == "failed" and f"file: {mask} is missing from storage" in release.error
    assert release.job.status == "failed" and "is missing from storage" in release.job.message
    assert not ReleaseCase.objects.filter(release=release).exists()  # nothing half-stored


def test_freezing_a_chunk_at_a_time(project, other_project, tmp_path, make_user, monkeypatch):
    import releases.freeze

    monkeypatch.setattr(releases.freeze, "FREEZE_CHUNK", 1)  # every scan its own chunk, in both passes
    for p in (project, other_project):
        reviewed_case(p, tmp_path / p.slug, make_user)
    release = release_create(
        dataset=dataset_create(slug="both", name="Both", projects=[project, other_project]),
        selection={"sources": "both", "statuses": ["accepted", "rejected"]},
    )
    manifest = release_manifest(release)
    assert [c["scan"] for c in manifest["cases"]] == sorted(c["scan"] for c in manifest["cases"])
    assert len(manifest["cases"]) == 2 == release.counts["cases"] == manifest["counts"]["cases"]
    assert release.counts["labels_per_source"]["human"] == 4  # per project: one accepted, one rejected
    rows = ReleaseLabel.objects.filter(release=release).count()
    assert rows == sum(len(c["labels"]) for c in manifest["cases"]) == release.counts["labels"]
    assert [r.label_id for r in ReleaseLabel.objects.filter(release=release, source="human")]

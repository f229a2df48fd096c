"""The release of real data that the export tests read: what freezing put in it."""

import pytest

from releases.models import ReleaseCase, ReleaseLabel
from tests.releases.real import real_release

pytestmark = pytest.mark.django_db


def test_real_release_holds_the_ct_and_the_radiographs(tmp_path, shared_data, make_user):
    real = real_release(shared_data, tmp_path, make_user)
    release = real.release
    cases = {c.scan_id: c for c in ReleaseCase.objects.filter(release=release)}
    assert real.ct.pk in cases and len(cases) >= 3
    ct = cases[real.ct.pk].entry
    assert ct["numbering"] == {"patient": real.ct.study.patient_id, "study": 1, "scan": 1}
    labels = ReleaseLabel.objects.filter(release=release, case__scan_id=real.ct.pk)
    human = [label for label in labels if label.source == "human" and label.kind == "mask"]
    assert sorted(label.category for label in human) == ["2d", "2e"]  # the mass and the effusion
    radiograph_labels = ReleaseLabel.objects.filter(release=release, case__scan__ndim=2, source="human")
    assert {label.kind for label in radiograph_labels} >= {"box", "mask"}
    context = [e for e in ct["labels"] if e.get("role") == "context"]
    assert {e["code"] for e in context} == {"left_lung", "right_lung"}
    # every mask class, context ones too, has a value in the class table
    assert set(release.classes.values()) >= {"2d", "2e", "left_lung", "right_lung"}
    assert sorted(int(k) for k in release.classes) == list(range(1, len(release.classes) + 1))

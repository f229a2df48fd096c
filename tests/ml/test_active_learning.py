"""Active learning over a project: scores of unlabelled scans stored per model and strategy, ranked for
the annotation queue; BALD needs dropout; labelled scans (in a training snapshot) are left out."""

import pytest
import torch
from django.urls import reverse
from monai.networks.nets import UNet

from ml.active_learning import ActiveLearningError, ranked, scores_compute
from ml.models import CaseScore, TrainingRun
from ml.services import model_version_register
from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest

pytestmark = pytest.mark.django_db(transaction=True)
SPEC = {"ndim": 3, "channels": 1, "roi_size": [32, 32, 8], "window": [-1000, 400], "modality": ["CT"]}


def _net(dropout):
    return {
        "name": "UNet",
        "args": {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "channels": [4, 8],
            "strides": [2],
            "num_res_units": 0,
            "dropout": dropout,
        },
    }


@pytest.fixture
def scans(project, tmp_path):
    for i in range(3):
        volume, _ = demo.synthetic_chest_ct(shape=(8 + 2 * i, 40, 40), spacing=(5.0, 7.0, 7.0))
        demo.write_ct_series(
            tmp_path / f"c{i}", volume, (5.0, 7.0, 7.0), patient_id=f"P{i}", accession=f"A{i}"
        )
        scans_ingest(project=project, paths=[tmp_path / f"c{i}"], workers=1)
    return list(Scan.objects.filter(project=project).order_by("pk"))


def _register(project, tmp_path, name, dropout):
    torch.manual_seed(1)
    spec = _net(dropout)
    path = tmp_path / f"{name}.pt"
    torch.save(UNet(**spec["args"]).state_dict(), path)
    version = model_version_register(
        project=project,
        path=path,
        fmt="state-dict",
        name=name,
        input_spec=SPEC,
        label_names=["background", "lung"],
        network=spec,
    )
    version.refresh_from_db()
    return version


def test_scores_rank_and_replace(project, scans, tmp_path, manager, api_client):
    version = _register(project, tmp_path, "drop", 0.3)
    rows = scores_compute(project=project, strategy="predictive_entropy", version=version)
    assert len(rows) == 3 and all(0 <= r.score <= 1 for r in rows)
    order = ranked(project=project, strategy="predictive_entropy", version=version)
    assert [r.score for r in order] == sorted((r.score for r in order), reverse=True)
    bald = scores_compute(project=project, strategy="bald", version=version, params={"samples": 3})
    assert all(r.score >= 0 for r in bald)
    scores_compute(project=project, strategy="predictive_entropy", version=version)
    assert CaseScore.objects.filter(strategy="predictive_entropy").count() == 3  # replaced, not added
    assert len(scores_compute(project=project, strategy="random")) == 3
    random_order = [r.scan_id for r in ranked(project=project, strategy="random")]
    assert sorted(random_order) == [s.pk for s in scans]
    power = ranked(project=project, strategy="power_predictive_entropy", version=version, seed=3)
    assert sorted(r.scan_id for r in power) == [s.pk for s in scans]
    client = api_client(manager)
    listed = client.get(
        reverse("active-learning", args=[project.slug]), {"strategy": "predictive_entropy", "model": "drop"}
    ).json()
    assert [r["scan_id"] for r in listed] == [r.scan_id for r in order]
    started = client.post(
        reverse("active-learning", args=[project.slug]), {"strategy": "random"}, format="json"
    )
    assert started.status_code == 202


def test_bald_needs_dropout_and_labelled_scans_are_left_out(project, scans, tmp_path):
    plain = _register(project, tmp_path, "plain", None)
    with pytest.raises(ActiveLearningError, match="BALD needs dropout"):
        scores_compute(project=project, strategy="bald", version=plain)
    with pytest.raises(ActiveLearningError, match="^model: strategy predictive_entropy needs a model"):
        scores_compute(project=project, strategy="predictive_entropy")
    with pytest.raises(ActiveLearningError, match="^strategy:"):
        scores_compute(project=project, strategy="vibes")
    TrainingRun.objects.create(
        project=project, parent=plain, name="plain", examples=[{"scan": scans[0].pk}], split={}
    )
    rows = scores_compute(project=project, strategy="predictive_entropy", version=plain)
    assert sorted(r.scan_id for r in rows) == [scans[1].pk, scans[2].pk]

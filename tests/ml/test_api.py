"""Model registry and pre-annotation over the API: upload (multipart) validated by a job, rejection with
file and field, roles, other projects 404, a pre-annotation job whose proposals are listed and fetched."""

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from django.urls import reverse

from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest
from tests.ml.test_registry import SPEC, Soft

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ct(project, tmp_path):
    volume, _ = demo.synthetic_chest_ct(shape=(12, 48, 48), spacing=(5.0, 5.0, 5.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 5.0, 5.0))
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    return Scan.objects.get(project=project)


def _upload(client, project, labels="background,soft_tissue", spec=SPEC):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Soft()), buffer)
    buffer.seek(0)
    buffer.name = "soft.ts"
    return client.post(
        reverse("project-models", args=[project.slug]),
        {
            "file": buffer,
            "name": "soft",
            "format": "torchscript",
            "input_spec": json.dumps(spec),
            "label_names": labels,
        },
        format="multipart",
    )


def test_upload_validate_preannotate_and_fetch(project, manager, annotator, outsider, api_client, ct):
    client = api_client(manager)
    response = _upload(client, project)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "ready" and body["version"] == 1 and body["job_id"]
    rejected = _upload(client, project, labels="a,b,c").json()
    assert rejected["status"] == "rejected" and "soft.ts [label_names]" in rejected["error"]
    bad = _upload(client, project, spec={"ndim": 4})
    assert bad.status_code == 400 and "ndim" in bad.json()
    assert _upload(api_client(annotator), project).status_code == 403
    assert api_client(outsider).get(reverse("model-version-detail", args=[body["id"]])).status_code == 404

    started = api_client(annotator).post(
        reverse("scan-preannotate", args=[ct.pk]), {"generator": "model:soft"}, format="json"
    )
    assert started.status_code == 202
    job = client.get(reverse("job-detail", args=[started.json()["job_id"]])).json()
    assert job["status"] == "succeeded", job
    listed = client.get(reverse("region-proposal-list"), {"scan": ct.pk, "source": "model"}).json()
    (proposal,) = listed["results"]
    assert proposal["label"] == "soft_tissue" and proposal["model_version_id"] == body["id"]
    assert proposal["volume_ml"] > 0 and 0 < proposal["confidence"] <= 1
    raw = client.get(reverse("region-proposal-mask-file", args=[proposal["id"]]))
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(b"".join(raw.streaming_content))).dataobj)
    assert mask.shape == tuple(ct.shape) and int(mask.sum()) == proposal["pixels"]
    wrong = client.post(reverse("scan-preannotate", args=[ct.pk]), {"generator": "magic"}, format="json")
    assert wrong.status_code == 400 and "generator" in wrong.json()
    assert (
        api_client(outsider)
        .post(reverse("scan-preannotate", args=[ct.pk]), {"generator": "lungs"}, format="json")
        .status_code
        == 404
    )

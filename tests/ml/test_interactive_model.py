"""A registered interactive model answers the click tool (issue 16 item 7): the network input the platform
makes from clicks equals what MONAI's own transforms make (``Orientationd`` RAS, ``ScaleIntensityRanged``,
``Resized`` area, ``AddGuidanceSignald`` / ``AddGuidanceSignalDeepEditd``) on a scan stored in LPS order; a
TorchScript model registered as ``deepgrow`` answers a click through the API with a ball at the clicked
voxel (not mirrored), is loaded once for many clicks, and background clicks take their part away."""

import io

import numpy as np
import pytest
import torch
from django.urls import reverse
from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd
from monai.apps.deepgrow.transforms import AddGuidanceSignald
from monai.data import MetaTensor
from monai.transforms import Orientationd, Resized, ScaleIntensityRanged

from core.models import Job, Role
from core.services import membership_set
from ml.engine.interactive import interactive_input
from ml.models import ModelVersion
from ml.services import model_version_register
from ml.specs import InputSpec, ModelError
from tests.ml.test_interactive import nodule_case  # noqa: F401 (fixture)

LPS = np.array([[-0.7, 0, 0, 120.0], [0, -0.8, 0, 90.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def _monai_input(image, affine, window, roi, points_by_channel, style, sigma):
    """MONAI Label's way: the transforms on a MetaTensor, the clicks moved with the affines and scaled."""
    data = {"image": MetaTensor(torch.as_tensor(image)[None], affine=torch.as_tensor(affine))}
    data = Orientationd(keys="image", axcodes="RAS")(data)
    oriented = data["image"]
    to_ras = np.linalg.inv(oriented.affine.numpy()) @ affine
    shape = oriented.shape[1:]
    data = ScaleIntensityRanged(keys="image", a_min=window[0], a_max=window[1], b_min=0, b_max=1, clip=True)(
        data
    )
    data = Resized(keys="image", spatial_size=roi, mode="area")(data)
    factor = [r / n for r, n in zip(roi, shape, strict=True)]

    def moved(points):
        return [
            [int(v * f) for v, f in zip((to_ras @ [*p, 1])[:3].round(), factor, strict=True)] for p in points
        ]

    out = {"image": data["image"].numpy()}
    if style == "deepgrow":
        out["guidance"] = [moved(p) for p in points_by_channel]
        return AddGuidanceSignald(sigma=sigma)(out)["image"]
    out["guidance"] = {name: moved(p) for name, p in points_by_channel.items()}
    return AddGuidanceSignalDeepEditd(keys="image", sigma=sigma)(out)["image"]


def test_the_network_input_is_monai_labels():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 200, (40, 36, 12)).astype(np.float32)  # an LPS-ordered box (X, Y, Z)
    fg, bg = [[10, 20, 5], [12, 18, 6]], [[30, 5, 2]]
    spec = InputSpec.from_dict(
        {"ndim": 3, "channels": 3, "roi_size": [32, 32, 16], "window": [-160, 240],
         "interactive": {"style": "deepgrow", "sigma": 2}}
    )  # fmt: skip
    ours, _ = interactive_input(spec, ["lesion"], image, LPS, [0.7, 0.8, 2.5], fg, bg)
    theirs = _monai_input(image, LPS, (-160, 240), (32, 32, 16), [fg, bg], "deepgrow", 2)
    assert ours.shape == (1, 3, 32, 32, 16)
    np.testing.assert_allclose(ours[0].numpy(), theirs, atol=1e-5)
    assert ours[0, 1].max() == 1 and ours[0, 2].max() == 1  # one Gaussian each, scaled to [0, 1]

    names = ["background", "spleen", "liver"]
    spec = InputSpec.from_dict(
        {"ndim": 3, "channels": 4, "roi_size": [24, 24, 24], "window": [-175, 250],
         "interactive": {"style": "deepedit", "guidance": ["spleen", "liver", "background"]}}
    )  # fmt: skip
    ours, _ = interactive_input(spec, names, image, LPS, [0.7, 0.8, 2.5], fg, bg, label="liver")
    theirs = _monai_input(
        image, LPS, (-175, 250), (24, 24, 24), {"spleen": [], "liver": fg, "background": bg}, "deepedit", 3
    )
    np.testing.assert_allclose(ours[0].numpy(), theirs, atol=1e-5)
    assert ours[0, 1].max() == 0 and ours[0, 2].max() == 1 and ours[0, 3].max() == 1


def test_interactive_specs_are_checked_as_data():
    base = {"ndim": 3, "channels": 3, "roi_size": [32, 32, 16]}
    assert "interactive" not in InputSpec.from_dict(base).as_dict()  # other models' specs as before
    for raw, field in (
        ({"style": "sam"}, "interactive.style"),
        ({"style": "deepgrow", "magic": 1}, "interactive.magic"),
        ({"style": "deepgrow", "sigma": -1}, "interactive.sigma"),
        ({"style": "deepgrow", "crop_mm": [10, 10]}, "interactive.crop_mm"),
        ({"style": "deepedit", "guidance": ["a", "b", "c"]}, "channels"),
    ):
        with pytest.raises(ModelError) as err:
            InputSpec.from_dict({**base, "interactive": raw})
        assert err.value.field == field, raw
    with pytest.raises(ModelError) as err:
        InputSpec.from_dict({**base, "channels": 1, "interactive": {"style": "deepgrow"}})
    assert err.value.field == "channels"


class Guided(torch.nn.Module):
    """Foreground where the click's Gaussian is above the background clicks' by half: a ball per click."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 12.0 * (x[:, 1:2] - x[:, 2:3] - 0.5)


@pytest.mark.django_db(transaction=True)
def test_a_registered_deepgrow_model_answers_clicks(project, make_user, api_client, nodule_case, tmp_path):  # noqa: F811
    finding, seed, stored = nodule_case
    manager, ann = make_user("boss"), make_user("ann")
    membership_set(project=project, user=manager, role=Role.MANAGER)
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Guided()), buffer)
    (tmp_path / "guided.ts").write_bytes(buffer.getvalue())
    spec = {
        "ndim": 3, "channels": 3, "roi_size": [32, 32, 16], "window": [-160, 240], "modality": ["CT"],
        "interactive": {"style": "deepgrow", "sigma": 2, "crop_mm": [96, 96, 40]},
    }  # fmt: skip
    version = model_version_register(
        project=project, path=tmp_path / "guided.ts", fmt="torchscript", name="guided", input_spec=spec,
        label_names=["nodule"], user=manager,
    )  # fmt: skip
    version.refresh_from_db()
    assert version.status == "ready", version.error
    assert version.input_spec["interactive"] == {
        "style": "deepgrow",
        "sigma": 2.0,
        "crop_mm": [96.0, 96.0, 40.0],
    }

    client = api_client(ann)
    url = reverse("finding-interactive", args=[finding.pk])
    told = client.get(url).json()
    assert (
        told["method"] == "model"
        and told["model"]["name"] == "guided"
        and told["model"]["style"] == "deepgrow"
    )

    def answer(body):
        started = client.post(url, body, format="json")
        assert started.status_code == 202, started.content
        job = Job.objects.get(pk=started.json()["job_id"])
        assert job.status == "succeeded", job.message
        return client.get(reverse("finding-interactive-answer", args=[finding.pk, job.pk])).json()

    from ml.interactive import mask_decode

    first = answer({"points": [list(seed)]})
    assert first["method"] == "model" and first["model"]["id"] == version.pk and first["label"] == "nodule"
    assert first["loaded"] is True and first["input_shape"] == [1, 3, 32, 32, 16]
    full = np.zeros(stored.shape, bool)
    box = first["box"]
    full[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = mask_decode(first["mask"])
    centre = np.argwhere(full).mean(axis=0)
    assert np.abs(centre - np.asarray(seed)).max() <= 1.0, (centre, seed)  # at the click, not mirrored
    second = answer({"points": [list(seed)], "background": [[seed[0] + 3, seed[1], seed[2]]]})
    assert second["loaded"] is False  # kept from the first click
    assert 0 < second["voxels"] < first["voxels"]
    region = np.zeros(stored.shape, bool)
    box = second["box"]
    region[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = mask_decode(second["mask"])
    assert region[tuple(seed)] and not region[seed[0] + 3, seed[1], seed[2]]
    # a region grow is still there on request
    assert answer({"points": [list(seed)], "method": "region-grow"})["method"] == "region-grow"
    assert ModelVersion.objects.filter(project=project).count() == 1

"""Model loading (state dict + MONAI network spec, TorchScript, MONAI bundle), the forward-pass check
that rejects broken or mismatched files, and sliding-window inference back on the scan's grid. Tiny
networks on the CPU."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from ml.engine.inference import predict
from ml.engine.loading import check_forward, load_model
from ml.specs import InputSpec, ModelError

ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
        "num_res_units": 0}  # fmt: skip
SPEC = {
    "ndim": 3,
    "channels": 1,
    "roi_size": [16, 16, 16],
    "window": [-1000, 400],
    "spacing": [2.0, 2.0, 2.0],
}
NAMES = ["background", "lesion"]


def _net(seed=0):
    torch.manual_seed(seed)
    return UNet(**ARGS).eval()


def _state_file(tmp_path, net):
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    return path


def test_state_dict_torchscript_and_bundle_load_to_the_same_outputs(tmp_path):
    net = _net()
    x = torch.rand(1, 1, 16, 16, 16)
    expected = net(x)
    loaded = load_model(_state_file(tmp_path, net), "state-dict", network={"name": "UNet", "args": ARGS})
    torch.jit.save(torch.jit.script(net), tmp_path / "model.ts")
    scripted = load_model(tmp_path / "model.ts", "torchscript")
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        definition = {"_target_": "monai.networks.nets.UNet", **ARGS}
        zf.writestr("my_bundle/configs/inference.json", json.dumps({"network_def": definition}))
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        zf.writestr("my_bundle/models/model.pt", buffer.getvalue())
    bundled = load_model(bundle, "monai-bundle")
    for model in (loaded, scripted, bundled):
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)
        check_forward(model, InputSpec.from_dict(SPEC), NAMES, "m")


def test_broken_and_mismatched_files_are_rejected_with_file_and_field(tmp_path):
    good = _state_file(tmp_path, _net())
    with pytest.raises(ModelError, match=r"weights\.pt \[network\.name\].*'Nope'"):
        load_model(good, "state-dict", network={"name": "Nope"})
    other = {**ARGS, "channels": [8, 16]}
    with pytest.raises(ModelError, match=r"\[weights\]: does not fit the network"):
        load_model(good, "state-dict", network={"name": "UNet", "args": other})
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(ModelError, match=r"junk\.pt \[weights\]"):
        load_model(tmp_path / "junk.pt", "state-dict", network={"name": "UNet", "args": ARGS})
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("configs/inference.json", "{}")
    with pytest.raises(ModelError, match=r"models/model\.pt\]: missing"):
        load_model(empty, "monai-bundle")
    model = load_model(good, "state-dict", network={"name": "UNet", "args": ARGS})
    with pytest.raises(ModelError, match=r"\[label_names\]: 3 label names for 2 output channels"):
        check_forward(model, InputSpec.from_dict(SPEC), ["background", "a", "b"], "m")
    with pytest.raises(ModelError, match=r"\[input_spec\]: forward pass"):
        check_forward(model, InputSpec.from_dict({**SPEC, "channels": 3}), NAMES, "m")
    with pytest.raises(ModelError, match=r"\[roi_size\]"):
        InputSpec.from_dict({"ndim": 3, "roi_size": [16, 16]})


def test_nan_output_is_rejected():
    net = _net()
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    with pytest.raises(ModelError, match="NaN"):
        check_forward(net, InputSpec.from_dict(SPEC), NAMES, "m")


class _Threshold(torch.nn.Module):
    """A 'model' whose answer is known: lesion logit = 20·(x − 0.5) on the windowed intensity."""

    def forward(self, x):
        lesion = 20 * (x - 0.5)
        return torch.cat([-lesion, lesion], dim=1)


def test_predict_returns_masks_on_the_scan_grid_with_confidence():
    volume = np.full((40, 30, 20), -900.0, dtype=np.float32)  # X, Y, Z at 1 x 1 x 3 mm
    volume[10:20, 5:15, 4:10] = 300.0  # bright block
    spec = InputSpec.from_dict({**SPEC, "spacing": [2.0, 2.0, 2.0]})
    out = predict(_Threshold(), volume, [1.0, 1.0, 3.0], spec, NAMES)
    (lesion,) = out.labels
    assert lesion.name == "lesion" and out.mask(lesion).shape == volume.shape
    truth = volume > 0
    mask = out.mask(lesion)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9 and lesion.confidence > 0.8 and 0 <= lesion.entropy < 0.5
    assert out.device == "cpu" and out.seconds_model <= out.seconds_total

"""On a CUDA GPU (skipped elsewhere): sliding-window inference in bf16 autocast agrees with the CPU in
float32."""

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from ml.engine.inference import predict
from ml.specs import InputSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]


def test_bf16_gpu_inference_matches_cpu():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, (8, 16, 32), (2, 2), num_res_units=1).eval()
    volume = np.random.default_rng(0).normal(-400, 300, (80, 70, 40)).astype(np.float32)
    spec = InputSpec.from_dict({"ndim": 3, "roi_size": [48, 48, 32], "window": [-1000, 400]})
    cpu = predict(net, volume, [1.0, 1.0, 1.0], spec, ["background", "x"], device="cpu")
    gpu = predict(net.to("cuda"), volume, [1.0, 1.0, 1.0], spec, ["background", "x"], device="cuda")
    assert gpu.device == "cuda" and not gpu.warnings
    a, b = cpu.mask(cpu.labels[0]), gpu.mask(gpu.labels[0])
    assert (a == b).mean() > 0.99  # bf16 flips only voxels at p = 0.5

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


def test_label_map_on_the_gpu_matches_the_cpu_within_constant_memory():
    """14 channels resampled on the GPU to a 2 M-voxel grid: the CPU's label map (up to rounding at
    near-ties), and a peak under 4 float32 copies of the grid (all channels at once: 14)."""
    import torch.nn.functional as F

    from ml.engine.inference import label_map_from_probabilities

    g = torch.Generator().manual_seed(0)
    logits = F.interpolate(
        torch.randn(1, 14, 10, 10, 5, generator=g) * 3, size=(40, 40, 20), mode="trilinear"
    )
    probs = torch.softmax(logits[0], dim=0)
    names = ["background"] + [f"organ_{c}" for c in range(1, 14)]
    shape = (160, 160, 80)
    cpu = label_map_from_probabilities(probs, names, shape)
    on_gpu = probs.cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gpu = label_map_from_probabilities(on_gpu, names, shape)
    peak = torch.cuda.max_memory_allocated() - base
    voxels = 160 * 160 * 80
    assert peak < 4 * 4 * voxels, f"{peak / 2**20:.0f} MB"
    assert (cpu.index == gpu.index).mean() > 0.999
    assert [r.name for r in cpu.labels] == [r.name for r in gpu.labels]

"""What the steps of ``bench/bench_gpu.py`` share: the model's window and spacing, the networks measured
(described as the registry takes them), device synchronisation and autocast, and peak-memory measurement."""

import torch
from monai.networks.nets import SegResNet, SwinUNETR, UNet

WINDOW = (-1000.0, 400.0)
AIR = 0.3  # windowed intensity below which a voxel is air or lung (HU < -580): the known answer
MODEL_SPACING = [1.5, 1.5, 2.0]


def networks(quick: bool, channels: int = 2) -> dict:
    """name -> (MONAI class name, args): the same description the registry takes for a state dict."""
    if quick:
        return {
            "UNet": (
                "UNet",
                {
                    "spatial_dims": 3,
                    "in_channels": 1,
                    "out_channels": channels,
                    "channels": [8, 16, 32],
                    "strides": [2, 2],
                    "num_res_units": 1,
                },
            ),
            "SegResNet": (
                "SegResNet",
                {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "init_filters": 8},
            ),
            "SwinUNETR": (
                "SwinUNETR",
                {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "feature_size": 12},
            ),
        }
    return {
        "UNet 32-320": (
            "UNet",
            {
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": channels,
                "channels": [32, 64, 128, 256, 320],
                "strides": [2, 2, 2, 2],
                "num_res_units": 2,
            },
        ),
        "SegResNet 32": (
            "SegResNet",
            {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "init_filters": 32},
        ),
        "SwinUNETR 48": (
            "SwinUNETR",
            {"spatial_dims": 3, "in_channels": 1, "out_channels": channels, "feature_size": 48},
        ),
    }


def unet_spec(quick: bool, channels: int = 2) -> tuple:
    """The U-Net of ``networks``: the one fitted in step 1 and run end to end in steps 2 and 3."""
    return networks(quick, channels)["UNet" if quick else "UNet 32-320"]


def build(spec: tuple) -> torch.nn.Module:
    return {"UNet": UNet, "SegResNet": SegResNet, "SwinUNETR": SwinUNETR}[spec[0]](**spec[1])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def amp(device: str, dtype: torch.dtype):
    return torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


def _vm(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith(field + ":"))


class Peaks:
    """Peak host RSS (VmHWM, reset) and peak GPU memory over a block, MB."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        self.start = _vm("VmRSS")
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.gpu_start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        self.host_mb = _vm("VmHWM") - self.start
        self.gpu_mb = None
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.gpu_mb = (torch.cuda.max_memory_allocated() - self.gpu_start) / 2**20
        return False

"""The test bundle of ``tests/ml/test_bundles.py`` and MONAI's own runner on it, without Django: the
device check (``bench/bundle_gpu.py``) uses them too.

MONAI's runner (``monai.bundle.run``) evaluates the config's ``$`` expressions as Python and imports what
``_target_`` names: it is only given bundles written here (trusted) or the model zoo's own configs.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import UNet

NET = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
}
LABELS = ["background", "left_thing", "right_thing"]
CONFIG = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "image_key": "image",
    "output_dir": "$@bundle_root + '/eval'",
    "datalist": [],  # the test gives the scan's NIfTI
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", **NET},
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [2.5, 2.5, 5.0], "mode": "bilinear"},
            {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": False},
            {"_target_": "EnsureTyped", "keys": "@image_key"},
        ],
    },
    "dataset": {
        "_target_": "Dataset",
        "data": "$[{'image': i} for i in @datalist]",
        "transform": "@preprocessing",
    },
    "dataloader": {
        "_target_": "DataLoader",
        "dataset": "@dataset",
        "batch_size": 1,
        "shuffle": False,
        "num_workers": 0,
    },
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": [64, 64, 32],
        "sw_batch_size": 2,
        "overlap": 0.25,
        "mode": "gaussian",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    },
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "@image_key",
                "meta_key_postfix": "meta_dict",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "output_dtype": "$numpy.float32",
                "separate_folder": False,
                "resample": False,
            },
        ],
    },
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "amp": False,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
    },
    "initialize": ["$monai.utils.set_determinism(seed=0)", "$@checkpointloader(@evaluator)"],
    "run": ["$@evaluator.run()"],
}
METADATA = {
    "version": "0.1.0",
    "name": "orientation test bundle",
    "task": "test segmentation",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [64, 64, 32],
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 3,
                "spatial_shape": [64, 64, 32],
                "channel_def": dict(enumerate(LABELS)),
            }
        },
    },
}


def network() -> UNet:
    """Random weights (seeded), made orientation-sensitive: the first convolution's kernels are replaced
    by one-sided differences along the first axis, so a structure's left and right edges get different
    labels and a mirrored input gives mirrored-and-swapped labels."""
    torch.manual_seed(7)
    net = UNet(**NET).eval()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    with torch.no_grad():
        kernel = torch.zeros_like(first.weight)
        for k in range(kernel.shape[0]):
            sign = 1.0 if k % 2 == 0 else -1.0
            kernel[k, 0, 0, 1, 1], kernel[k, 0, 2, 1, 1] = -sign * 2.0, sign * 2.0
        first.weight.copy_(kernel + 0.05 * first.weight)
    return net


def write_bundle(folder: Path, config=None, metadata=None, state=None, *, torchscript=None) -> Path:
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    config = CONFIG if config is None else config
    metadata = METADATA if metadata is None else metadata
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    if torchscript is not None:
        torch.jit.save(torch.jit.script(torchscript), folder / "models" / "model.ts")
    else:
        state = {"model": network().state_dict()} if state is None else state
        torch.save(state, folder / "models" / "model.pt")
    return folder


def monai_run(bundle: Path, nifti: Path, out: Path, config: str = "configs/inference.json", **override):
    """MONAI's own bundle runner (``monai.bundle.run``) on ``nifti`` with the bundle's ``config``
    (``override``: config ids set, as on its command line): the label map it saves (X, Y, Z) and its
    affine."""
    from monai.bundle import run

    run(
        run_id="run",
        init_id="initialize",
        config_file=str(bundle / config),
        meta_file=str(bundle / "configs/metadata.json"),
        bundle_root=str(bundle),
        datalist=[str(nifti)],
        output_dir=str(out),
        logging_file=None,
        **override,
    )
    (saved,) = list(out.rglob("*.nii.gz"))
    image = nib.load(saved)
    return np.asarray(image.dataobj).reshape(image.shape[:3]).round().astype(np.int64), image.affine

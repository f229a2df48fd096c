"""Which device a worker runs models on: ``ML_DEVICE`` (e.g. ``cuda:1``, ``cpu``) or the first GPU, else
the CPU."""

import os

import torch


def pick_device() -> str:
    wanted = os.environ.get("ML_DEVICE", "").strip()
    if wanted:
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"

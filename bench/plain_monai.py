"""Plain MONAI's pre- and post-processing of a stored scan, the baseline that ``bench/bench_gpu.py`` and
``bench/bench_label_memory.py`` set the platform's pre-annotation beside: ``LoadImaged``,
``EnsureChannelFirstd``, ``ScaleIntensityRanged`` (the model's window to 0..1), ``Spacingd`` (the model's
spacing, bilinear) before the sliding window; ``Activationsd(softmax)``, ``Invertd`` (every probability
channel back to the scan's grid) and ``AsDiscreted(argmax)`` after it, on the ``"pred"`` key.

MONAI is imported when called, not when this module is: ``bench_label_memory.py``'s children import it
before they take their start figure."""


def plain_monai_transforms(window, spacing) -> tuple:
    """(pre, post): the two ``Compose`` of plain MONAI for a model with this window (HU) and spacing (mm)."""
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    pre = Compose(
        [
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True),
            Spacingd("image", pixdim=list(spacing), mode="bilinear"),
        ]
    )
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", argmax=True),
        ]
    )
    return pre, post

"""Training reads its frozen masks through the one mask codec (``studies.masks``): a 2D PNG and a 3D
NIfTI come back as ``(X, Y[, Z])`` booleans, a changed file or one that is no mask is a field error."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from core.storage import storage_save_bytes
from ml.training import TrainingError, example_mask_array
from studies.masks import mask_encode


def _stored(key: str, data: bytes) -> tuple[str, str]:
    return storage_save_bytes(key, data), hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3)])
def test_frozen_masks_read_back_on_the_scan_grid(shape):
    mask = np.zeros(shape, bool)
    mask[1:4, 2:4] = True  # X 1..3, Y 2..3: a non-square, non-symmetric mask
    data, suffix = mask_encode(mask, np.diag([0.7, 0.8, 2.0, 1.0]))
    key, sha = _stored(f"t/mask{suffix}", data)
    got = example_mask_array(key, sha)
    assert got.dtype == bool and got.shape == shape and np.array_equal(got, mask)


def test_a_changed_or_undecodable_mask_is_a_field_error():
    key, sha = _stored("t/not-a-mask.png", b"not a mask at all")
    with pytest.raises(TrainingError) as err:
        example_mask_array(key, sha)
    assert err.value.field == "examples"
    assert key in str(err.value) and "not a PNG or NIfTI mask" in str(err.value)
    with pytest.raises(TrainingError, match="changed after the run was created"):
        example_mask_array(key, "0" * 64)

"""Airway removal of the lungs generator (issue 16 item 6) on chest CT phantoms whose airway trees take
several shapes (``tests/ml/airway_phantoms.py``: bent trachea, wide carina, tracheal bronchus, emphysema
as dark as the lumen, thick slices, oesophageal air behind the trachea).

The real series is tested in ``test_lungs.py`` (its trachea is not in the masks); ``bench/bench_lungs.py``
gives the figures of both against the same pipeline without airway removal.
"""

import numpy as np
import pytest

from ml.generators.lungs import LungParams, lungs_segment
from tests.ml.airway_phantoms import SHAPES, airway_phantom


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("shape", SHAPES)
def test_the_trachea_and_main_bronchi_leave_the_lungs_whatever_the_tree(shape):
    # given a chest phantom with an airway tree of this shape
    p = airway_phantom(shape)
    # when its lungs are segmented
    result = lungs_segment(p.hu, spacing=p.spacing, affine=p.affine)
    lungs = result.left | result.right
    # then the airway outside the lung envelopes is (all but its partial-volume rim) out of the masks
    assert result.warnings == []
    left_in = int((lungs & p.airway).sum())
    assert left_in <= 0.02 * p.airway.sum(), f"{left_in} of {int(p.airway.sum())} airway voxels in the lungs"
    # the removed airway is the tree's: the trachea's air, not the oesophagus's, and not a leak into the lungs
    assert result.airway is not None
    assert (result.airway & p.airway).sum() >= 0.9 * p.airway.sum()
    assert not (result.airway & p.oesophagus).any()
    removed_ml = float(result.airway.sum()) * p.voxel_ml
    assert removed_ml <= 1.5 * float(p.tree.sum()) * p.voxel_ml, f"airway grew to {removed_ml:.1f} ml: a leak"
    # and each lung is its truth
    assert dice(result.left, p.lungs["left"]) >= 0.99
    assert dice(result.right, p.lungs["right"]) >= 0.99


def test_without_airway_removal_the_trachea_would_stay_in_a_lung():
    """The check above can fail: the same pipeline with no trachea seed keeps the airway in the masks."""
    p = airway_phantom("typical")
    no_seed = LungParams(trachea_area_mm2=(0.0, 0.0))
    result = lungs_segment(p.hu, spacing=p.spacing, affine=p.affine, params=no_seed)
    assert any("trachea" in w for w in result.warnings)
    assert ((result.left | result.right) & p.airway).sum() > 0.5 * p.airway.sum()

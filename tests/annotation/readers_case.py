"""The set-up the several-readers tests share (test_readers.py, test_readers_api.py): a project that
takes N readers per finding, its members, a report of two present findings, a box-shaped mask."""

import numpy as np
import pytest

from core.models import Role

REPORT = "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."


def readers_project(project, n: int, method: str = "majority"):
    project.readers_per_finding, project.consensus_method = n, method
    project.save()
    return project


@pytest.fixture
def people(make_members, project):
    return make_members(
        project,
        ann1=Role.ANNOTATOR,
        ann2=Role.ANNOTATOR,
        ann3=Role.ANNOTATOR,
        ann4=Role.ANNOTATOR,
        rad=Role.RADIOLOGIST,
        res=Role.RESEARCHER,
        boss=Role.MANAGER,
    )


def box_mask(shape, *slices) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[slices] = True
    return mask

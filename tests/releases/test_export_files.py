"""Exported files are readable by the group, whatever wrote them (a scratch file moved into place, bytes
written directly): in a folder (the CLI) and in the platform's storage (an export job)."""

import os
import stat

import pytest
from django.core.files.storage import default_storage

from releases.exporting import StorageSink
from releases.records import DirSink
from releases.services import dataset_create, release_create, release_export_to
from tests.releases.factories import reviewed_case

FORMATS = ("rexgroundingct", "monai", "dicom-seg")


@pytest.fixture
def release(project, tmp_path, make_user):
    reviewed_case(project, tmp_path, make_user)
    return release_create(dataset=dataset_create(slug="modes", name="Modes", projects=[project]))


def _modes(paths) -> dict[str, int]:
    return {str(p): stat.S_IMODE(os.stat(p).st_mode) for p in paths}


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", FORMATS)
def test_folder_export_files_are_group_readable(release, tmp_path, fmt):
    old = os.umask(0o022)
    try:
        sink = DirSink(tmp_path / fmt)
        release_export_to(release, fmt, sink)
        sink.close()
    finally:
        os.umask(old)
    modes = _modes(p for p in (tmp_path / fmt).rglob("*") if p.is_file())
    assert len(modes) >= 5
    assert {m for m in modes.values()} == {0o644}, {p: oct(m) for p, m in modes.items() if m != 0o644}


@pytest.mark.django_db
def test_storage_export_files_get_the_storage_mode(release, settings):
    sink = StorageSink(f"releases/modes/v{release.version}/exports/test")
    try:
        release_export_to(release, "monai", sink)
    finally:
        sink.close()
    paths = [default_storage.path(key) for key in sink.keys]
    modes = _modes(paths)
    assert len(modes) >= 4
    wanted = default_storage.file_permissions_mode or 0o644
    assert set(modes.values()) == {wanted} and wanted & stat.S_IRGRP

"""Finding files: folders, zip archives, and refusing unsafe archives (path escape, zip bombs)."""

import zipfile

import pytest

from studies.ingest.files import file_kind, files_collect, zip_extract
from studies.ingest.types import IngestError


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_folder_recursive_and_zip_members_are_found(tmp_path):
    (tmp_path / "in" / "a" / "b").mkdir(parents=True)
    (tmp_path / "in" / "a" / "b" / "x.dcm").write_bytes(b"x")
    (tmp_path / "in" / ".DS_Store").write_bytes(b"junk")
    _zip(tmp_path / "in" / "a" / "pack.zip", {"s/1.dcm": b"1", "s/2.dcm": b"2", "__MACOSX/._1.dcm": b""})
    found, errors = files_collect([tmp_path / "in"], tmp_path / "work")
    names = sorted(f.display.split("/in/")[-1] for f in found)
    assert errors == []
    assert names == ["a/b/x.dcm", "a/pack.zip!s/1.dcm", "a/pack.zip!s/2.dcm"]
    assert all(f.path.is_file() for f in found)


@pytest.mark.parametrize("bad", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm"])
def test_zip_with_escaping_member_is_refused_whole(tmp_path, bad):
    archive = _zip(tmp_path / "bad.zip", {"ok.dcm": b"fine", bad: b"evil"})
    with pytest.raises(IngestError) as exc:
        zip_extract(archive, tmp_path / "out")
    assert "bad.zip" in str(exc.value) and "refused" in exc.value.reason
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path / "out" / "ok.dcm").exists()


def test_zip_bomb_ratio_is_refused(tmp_path, settings):
    settings.ZIP_MAX_RATIO = 100
    archive = _zip(tmp_path / "bomb.zip", {"zeros.dcm": b"\0" * (20 * 1024 * 1024)})
    with pytest.raises(IngestError, match="compresses .* over the limit"):
        zip_extract(archive, tmp_path / "out")


def test_zip_total_size_limit(tmp_path, settings):
    settings.ZIP_MAX_TOTAL_BYTES = 1000
    archive = _zip(tmp_path / "big.zip", {"a.dcm": b"a" * 600, "b.dcm": b"b" * 600}, zipfile.ZIP_STORED)
    found, errors = files_collect([archive], tmp_path / "work")
    assert found == []
    assert len(errors) == 1 and "exceeds the limit" in errors[0].reason
    assert not any((tmp_path / "work").rglob("*.dcm"))


def test_zip_member_count_limit(tmp_path, settings):
    settings.ZIP_MAX_MEMBERS = 3
    archive = _zip(tmp_path / "many.zip", {f"{i}.dcm": b"x" for i in range(5)})
    with pytest.raises(IngestError, match="5 members exceed"):
        zip_extract(archive, tmp_path / "out")


def test_missing_path_is_an_error(tmp_path):
    found, errors = files_collect([tmp_path / "nope"], tmp_path / "work")
    assert found == [] and errors[0].reason == "no such file or folder"


def test_file_kind_sniffs_content(tmp_path):
    png = tmp_path / "noext"
    png.write_bytes(b"\x89PNG\r\n\x1a\n....")
    jpg = tmp_path / "x.bin"
    jpg.write_bytes(b"\xff\xd8\xff\xe0....")
    nii = tmp_path / "v.nii.gz"
    nii.write_bytes(b"whatever")
    other = tmp_path / "slice"
    other.write_bytes(b"\0" * 200)
    assert [file_kind(p) for p in (png, jpg, nii, other)] == ["png", "jpeg", "nifti", "dicom"]


def test_a_corrupt_member_is_listed_and_every_other_member_extracted(tmp_path):
    (tmp_path / "in").mkdir()
    archive = _zip(tmp_path / "in" / "pack.zip", {"s/1.dcm": b"one" * 1000, "s/2.dcm": b"two" * 1000})
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("s/1.dcm")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF  # its data no longer matches its CRC-32
    archive.write_bytes(bytes(data))

    found, errors = files_collect([archive], tmp_path / "work")

    assert [f.display.split("/in/")[-1] for f in found] == ["pack.zip!s/2.dcm"]
    assert (found[0].path.read_bytes()) == b"two" * 1000
    [error] = errors
    assert error.file.endswith("pack.zip!s/1.dcm") and error.field == "member"
    assert error.reason.startswith("corrupt zip member") and not list((tmp_path / "work").rglob("1.dcm"))
    with pytest.raises(IngestError) as refused:  # alone (a gaze archive) the archive is refused whole
        zip_extract(archive, tmp_path / "gaze")
    assert "archive refused" in refused.value.reason

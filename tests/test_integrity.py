"""bebkit.integrity: hashes recorded at publish, verified on reuse; atomic, disk-full-safe publish."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from bebkit.errors import RunError
from bebkit.integrity import (
    INTEGRITY_FILE,
    IntegrityError,
    disk_error,
    file_sha256,
    publish_folder,
    remove_stale,
    verify,
    write_manifest,
)


def _artifact(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "config.json").write_text('{"a": 1}')
    write_manifest(folder)
    return folder


def test_record_lists_every_file_with_size_and_hash(tmp_path: Path) -> None:
    a = _artifact(tmp_path / "a")
    rec = json.loads((a / INTEGRITY_FILE).read_text())
    assert sorted(rec["files"]) == ["sub/config.json", "weights.bin"]
    assert rec["files"]["weights.bin"]["size"] == 10240
    assert rec["files"]["weights.bin"]["sha256"] == file_sha256(a / "weights.bin")
    cheap = verify(a, deep=False)
    assert (cheap.files, cheap.hashed_files) == (2, 0)  # size + mtime only
    deep = verify(a, deep=True)
    assert (deep.files, deep.hashed_files, deep.hashed_bytes) == (2, 2, 10240 + 8)


def test_truncated_file_is_one_line_naming_the_artifact(tmp_path: Path) -> None:
    a = _artifact(tmp_path / "a")
    data = (a / "weights.bin").read_bytes()
    (a / "weights.bin").write_bytes(data[:-1])
    with pytest.raises(IntegrityError) as info:
        verify(a, deep=False, name="adapter toy/neg")
    msg = str(info.value)
    assert isinstance(info.value, RunError) and info.value.exit_code == 1
    assert msg.startswith("adapter toy/neg: weights.bin has 10239 bytes, recorded 10240")
    assert "\n" not in msg


def test_same_size_edit_is_caught_by_its_mtime(tmp_path: Path) -> None:
    a = _artifact(tmp_path / "a")
    st = (a / "sub" / "config.json").stat()
    (a / "sub" / "config.json").write_text('{"a": 2}')
    os.utime(a / "sub" / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(IntegrityError, match=r"sub/config\.json content changed"):
        verify(a, deep=False)


def test_mtime_restoring_edit_needs_deep(tmp_path: Path) -> None:
    """The documented limit of the cheap check: a same-size edit that restores the mtime."""
    a = _artifact(tmp_path / "a")
    st = (a / "weights.bin").stat()
    data = bytearray((a / "weights.bin").read_bytes())
    data[5] ^= 0xFF
    (a / "weights.bin").write_bytes(bytes(data))
    os.utime(a / "weights.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    verify(a, deep=False)  # passes: size and mtime match
    with pytest.raises(IntegrityError, match=r"weights\.bin content changed"):
        verify(a, deep=True)


def test_missing_file_record_and_folder(tmp_path: Path) -> None:
    a = _artifact(tmp_path / "a")
    (a / "sub" / "config.json").unlink()
    with pytest.raises(IntegrityError, match=r"sub/config\.json is missing"):
        verify(a, deep=False)
    (a / INTEGRITY_FILE).write_text("{not json")
    with pytest.raises(IntegrityError, match="unreadable"):
        verify(a, deep=False)
    (a / INTEGRITY_FILE).unlink()
    with pytest.raises(IntegrityError, match="no integrity record"):
        verify(a, deep=False)
    with pytest.raises(IntegrityError, match="missing"):
        verify(tmp_path / "nope", deep=False)


def test_explicit_file_list(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "x").write_text("x")
    (a / "scratch").write_text("ignored")
    write_manifest(a, files=["x"])
    (a / "scratch").write_text("changed freely")
    assert verify(a, deep=True).files == 1
    with pytest.raises(ValueError, match="not inside"):
        write_manifest(a, files=[tmp_path / "elsewhere"])
    with pytest.raises(ValueError, match="not a file"):
        write_manifest(a, files=["nope"])


def test_publish_folder_is_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "art"
    with publish_folder(target, what="test artifact") as tmp:
        (tmp / "w").write_text("v1")
    assert verify(target, deep=True).files == 1
    with pytest.raises(KeyboardInterrupt), publish_folder(target, what="test artifact") as tmp:
        (tmp / "w").write_text("v2-partial")
        raise KeyboardInterrupt
    assert (target / "w").read_text() == "v1"  # the old one is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    with publish_folder(target, what="test artifact") as tmp:
        (tmp / "w").write_text("v2")
    assert (target / "w").read_text() == "v2" and verify(target, deep=True).files == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_disk_full_is_one_line_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "art"

    def full_write(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[:3])  # part of the file reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunError) as info, publish_folder(target, what="converted model m") as tmp:
        monkeypatch.setattr(Path, "write_bytes", full_write)
        (tmp / "w").write_bytes(b"0123456789")
    monkeypatch.undo()
    msg = str(info.value)
    assert msg == (
        f"cannot write converted model m in {tmp_path}: no space left on device; "
        "nothing was published"
    )
    assert not isinstance(info.value, IntegrityError)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp folder


def test_disk_error_recognises_wrapped_messages() -> None:
    assert disk_error(OSError(errno.EDQUOT, "quota")) == "no space left on device"
    assert disk_error(RuntimeError("IoError(Os { code: 28, kind: StorageFull })")) is not None
    assert disk_error(OSError(errno.EROFS, "ro")).startswith("not writable")
    assert disk_error(OSError(errno.ENOENT, "x")) is None
    assert disk_error(ValueError("boom")) is None


def test_remove_stale_only_touches_this_artifact(tmp_path: Path) -> None:
    for name in (".art.tmp-1", ".art.old-2", ".other.tmp-3", "art"):
        (tmp_path / name).mkdir()
    removed = remove_stale(tmp_path / "art")
    assert sorted(p.name for p in removed) == [".art.old-2", ".art.tmp-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-3", "art"]

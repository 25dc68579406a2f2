"""Atomic writes: the final name appears only with complete content, and a failure leaves the
previous file untouched and no temporary file behind."""

from __future__ import annotations

import pytest

from lorahelpers.atomic import atomic_dir, atomic_path, write_atomic


def test_write_atomic_text_and_bytes(tmp_path):
    path = write_atomic(tmp_path / "new" / "a.txt", "één\nline\n")
    assert path.read_bytes() == "één\nline\n".encode()  # UTF-8, newlines as given
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "model.gguf"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as tmp:
        tmp.write_text("half")
        assert final.read_text() == "old"  # nothing renamed while writing
        raise KeyboardInterrupt
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_atomic_path_renames_what_a_writer_left(tmp_path):
    final = tmp_path / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".out.bin.")
        tmp.write_bytes(b"done")
    assert final.read_bytes() == b"done"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_written_files_get_the_usual_permissions(tmp_path):
    # Others on the machine (an Ollama service user, a shared Colab folder) can read the
    # outputs exactly as with a plain open(): 0666 less the umask, not a temporary file's 0600.
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = write_atomic(tmp_path / "summary.json", "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path):
    final = tmp_path / "checkpoint-4"
    with atomic_dir(final) as tmp:
        (tmp / "a.bin").write_bytes(b"new")
        assert not final.exists()  # nothing under the final name while filling
    assert [p.name for p in final.iterdir()] == ["a.bin"]
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "b.bin").write_bytes(b"half")
        raise KeyboardInterrupt
    assert [p.name for p in final.iterdir()] == ["a.bin"]
    with atomic_dir(final) as tmp:
        (tmp / "c.bin").write_bytes(b"newer")
    assert [p.name for p in final.iterdir()] == ["c.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-4"]

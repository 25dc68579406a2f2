"""Atomic writes: everything lorahelpers writes goes to a temporary name in the target's folder
and is renamed over the target only when complete. A failure (Ctrl-C included) removes the
temporary file, so nothing half-written ever carries a final name. No dependencies.

    >>> write_atomic(Path("out/summary.json"), '{"steps": 60}').read_text()
    '{"steps": 60}'
    >>> with atomic_path(Path("out/model-q8_0.gguf")) as tmp:          # doctest: +SKIP
    ...     run_converter(outfile=tmp)
    >>> with atomic_dir(Path("keep/checkpoint-40")) as tmp:
    ...     _ = (tmp / "trainer_state.json").write_text("{}")
    >>> [p.name for p in Path("keep").iterdir()]  # no temporary folder is left
    ['checkpoint-40']
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str = ".part"):
    """Yield a temporary path next to `final` for someone (a process, savefig) to write;
    renamed to `final` when the block ends without error, removed otherwise."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would stay on the final file; touch gives the usual 0666 less umask.
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}{suffix}")
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write text (UTF-8, newlines as given) or bytes to `path` atomically; returns `path`."""
    with atomic_path(Path(path), suffix=".tmp") as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(final: Path, suffix: str = ".part"):
    """Yield an empty temporary folder next to `final` to fill; when the block ends without
    error it replaces `final` (an earlier folder there is moved aside first, then removed),
    otherwise it is removed. A reader sees the old folder or the new one, never a mix; only a
    crash between the two renames can leave `final` missing, with the old one beside it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}{suffix}")
    tmp.mkdir()
    old = final.with_name(f".{final.name}.{secrets.token_hex(6)}.old")
    try:
        yield tmp
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)

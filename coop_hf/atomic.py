"""Atomic writes: a save either lands whole or leaves the previous files untouched."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside `target`; on success move each file into `target` with `os.replace`.

    Each file is replaced atomically and only after everything was written, so a crash while saving leaves
    the previous version of every file intact. Files in `target` that the save does not write are kept (a
    Trainer checkpoint folder also holds the optimizer state).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                destination = target / path.relative_to(staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(path, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary sibling and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o666 & ~_umask())  # a temporary file is private (0600); results are ordinary files
    os.replace(handle.name, path)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

"""Checks that make a run fail before training: unreadable images and class lists that do not match."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets

from .images import UnreadableImageError, load_rgb

_BATCH = 64

_READABLE_FILES: set[tuple[str, int, int, int]] = set()
"""Image files this process decoded, by (path, inode, size, modification time): a study checks the same few-shot
splits for every method and seed, and a file changed since is decoded again."""


def _file_identity(image: dict[str, Any]) -> tuple[str, int, int, int] | None:
    if image.get("bytes") is not None or not image.get("path"):
        return None
    try:
        status = os.stat(image["path"])
    except OSError:
        return None  # load_rgb reports it
    return (os.path.abspath(image["path"]), status.st_ino, status.st_size, status.st_mtime_ns)


def check_images(dataset: datasets.Dataset) -> None:
    """Fully decode every image of ``dataset`` (files already decoded by this process and unchanged since are not
    decoded again); raise one ``UnreadableImageError`` listing every failure."""
    images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    failures = []
    for start in range(0, len(images), _BATCH):
        for row, image in enumerate(images[start : start + _BATCH]["image"], start=start):
            identity = _file_identity(image)
            if identity in _READABLE_FILES:
                continue
            try:
                load_rgb(image)
            except UnreadableImageError as err:
                failures.append(f"row {row}: {err}")
            else:
                if identity is not None:
                    _READABLE_FILES.add(identity)
    if failures:
        raise UnreadableImageError(
            f"{len(failures)} of {len(images)} image(s) cannot be read:\n  " + "\n  ".join(failures)
        )


def check_classnames_match(dataset_classnames: Sequence[str], model_classnames: Sequence[str]) -> None:
    """Raise ``ValueError`` unless the dataset's class list equals the model's, naming the first change."""
    dataset_classnames, model_classnames = list(dataset_classnames), list(model_classnames)
    if dataset_classnames == model_classnames:
        return
    for index, (ours, theirs) in enumerate(zip(dataset_classnames, model_classnames, strict=False)):
        if ours != theirs:
            raise ValueError(
                f"Class lists differ first at label {index}: the dataset has {ours!r}, the model {theirs!r} "
                f"({len(dataset_classnames)} dataset classes, {len(model_classnames)} model classes)"
            )
    shorter = min(len(dataset_classnames), len(model_classnames))
    extra = (dataset_classnames if len(dataset_classnames) > shorter else model_classnames)[shorter]
    owner = "dataset" if len(dataset_classnames) > shorter else "model"
    raise ValueError(
        f"Class lists differ in length: the dataset has {len(dataset_classnames)} classes, the model "
        f"{len(model_classnames)}; the first extra one, label {shorter}, is the {owner}'s {extra!r}"
    )

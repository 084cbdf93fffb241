"""Checks that make a run fail before training: unreadable images and class lists that do not match."""

from __future__ import annotations

from collections.abc import Sequence

import datasets

from .images import UnreadableImageError, load_rgb

_BATCH = 64


def check_images(dataset: datasets.Dataset) -> None:
    """Fully decode every image of ``dataset``; raise one ``UnreadableImageError`` listing every failure."""
    images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    failures = []
    for start in range(0, len(images), _BATCH):
        for row, image in enumerate(images[start : start + _BATCH]["image"], start=start):
            try:
                load_rgb(image)
            except UnreadableImageError as err:
                failures.append(f"row {row}: {err}")
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

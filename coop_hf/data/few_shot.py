"""Seeded K-shot sampling that reproduces the official CoOp/Dassl draw, seed for seed.

The reference (Dassl's ``DatasetBase.generate_fewshot_dataset``, called by CoOp's dataset classes right after
``set_random_seed(seed)``) groups a split's items by label in order of first appearance, keeps each class's items
in split order, and takes ``random.sample(items, K)`` per class; a class with fewer than K items is taken whole
without consuming the stream. The val shots (min(K, 4)) are drawn the same way from the same stream, right after
the train shots. Here the stream is a local ``random.Random(seed)``, so the global ``random`` state is untouched.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import datasets

from .records import column_values

VAL_SHOTS_CAP = 4
"""CoOp's validation split gets min(K, 4) images per class."""

ALLOW_FEWER_FLAG = "--allow_fewer_shots"
"""The command-line flag that lets classes with fewer than K images through (the ``allow_fewer`` argument here)."""

_KEY_BATCH = 256


def row_keys(dataset: datasets.Dataset) -> list[str]:
    """A stable identity per row: ``image_path``, else a hash of the image bytes, else the image path."""
    if "image_path" in dataset.column_names:
        return [str(path) for path in column_values(dataset, "image_path")]
    images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    keys = []
    for batch in images.iter(batch_size=_KEY_BATCH):
        for index, image in enumerate(batch["image"], start=len(keys)):
            if image.get("bytes") is not None:
                keys.append(hashlib.sha256(image["bytes"]).hexdigest())
            elif image.get("path"):
                keys.append(str(image["path"]))
            else:
                raise ValueError(f"Row {index} has neither image bytes nor an image path to identify it by")
    return keys


def _check_shots(shots: int) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")


def _labels(dataset: datasets.Dataset) -> tuple[list[int], list[str]]:
    label_feature = dataset.features["label"]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise ValueError(f"the 'label' column must be a datasets.ClassLabel, got {label_feature!r}")
    return column_values(dataset, "label"), label_feature.names


def _draw(
    labels: Sequence[int], classnames: Sequence[str], shots: int, rng: random.Random, allow_fewer: bool
) -> list[int]:
    """Positions of a K-shot draw from ``labels``, consuming ``rng`` exactly as the reference does."""
    by_class: dict[int, list[int]] = {}  # insertion order: classes as they first appear
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    short = {label: len(rows) for label, rows in by_class.items() if len(rows) < shots}
    if short and not allow_fewer:
        listed = ", ".join(f"{label} {classnames[label]!r} ({count})" for label, count in list(short.items())[:10])
        if len(short) > 10:
            listed += f" and {len(short) - 10} more"
        raise ValueError(
            f"{len(short)} class(es) have fewer than {shots} images: {listed}. Lower --shots, or pass "
            f"{ALLOW_FEWER_FLAG} to take all images of such classes, as CoOp does."
        )
    chosen: list[int] = []
    for rows in by_class.values():
        # The reference samples even when a class has exactly K items (a seeded shuffle of them).
        chosen.extend(rng.sample(rows, shots) if len(rows) >= shots else rows)
    return chosen


def few_shot_indices(dataset: datasets.Dataset, shots: int, seed: int, *, allow_fewer: bool = False) -> list[int]:
    """Row indices of a K-shot draw with ``random.Random(seed)``, in the order CoOp/Dassl would list them.

    Classes come in order of first appearance, each class's rows in the order ``random.sample`` picks them from
    the class's rows in dataset order, so the draw depends on the row order (as the reference's does on the
    split file's). A class with fewer than ``shots`` rows raises a ``ValueError`` naming it unless
    ``allow_fewer``, which takes all of its rows (in row order, consuming no randomness, like the reference).
    """
    _check_shots(shots)
    labels, classnames = _labels(dataset)
    return _draw(labels, classnames, shots, random.Random(seed), allow_fewer)


def sample_few_shot(
    dataset: datasets.Dataset, shots: int, seed: int, *, allow_fewer: bool = False
) -> datasets.Dataset:
    """The rows of ``few_shot_indices``: ``shots`` images per class, drawn as CoOp/Dassl draw them for ``seed``.

    Rows come out grouped by class. The global ``random`` state is neither used nor changed.
    """
    return dataset.select(few_shot_indices(dataset, shots, seed, allow_fewer=allow_fewer))


def build_few_shot_splits(
    splits: datasets.DatasetDict, shots: int, seed: int, *, allow_fewer: bool = False
) -> datasets.DatasetDict:
    """CoOp's few-shot protocol: train K per class, val min(K, 4) per class, test whole.

    For a CoOp benchmark loaded with ``load_benchmark`` (rows in split-file order) this selects the same images,
    in the same order, as the official code for the same seed and K. Train and val are drawn from one
    ``random.Random(seed)`` stream, train first; Hub and local ``datasets`` splits are drawn the same way, in
    their row order. Without a "val" split (e.g. many Hub datasets), val is drawn, from the same stream, from the
    train images not drawn for train (kept in row order); the reference has no such case. (CoOp's ImageNet draws
    no val shots at all and validates on the whole test split; here its "val" gets min(K, 4) per class.)
    """
    _check_shots(shots)
    if "train" not in splits or "test" not in splits:
        raise ValueError(f"build_few_shot_splits needs 'train' and 'test' splits, got {list(splits)}")
    rng = random.Random(seed)
    train = splits["train"]
    labels, classnames = _labels(train)
    try:
        train_rows = _draw(labels, classnames, shots, rng, allow_fewer)
    except ValueError as err:
        raise ValueError(f"train split: {err}") from err
    if "val" in splits:
        val_source, source_name = splits["val"], "val split"
        val_labels, val_classnames = _labels(val_source)
        rows = list(range(len(val_source)))
    else:
        val_source, source_name = train, "val (from the train images not drawn for train)"
        taken = set(train_rows)
        rows = [row for row in range(len(train)) if row not in taken]
        val_labels, val_classnames = [labels[row] for row in rows], classnames
    try:
        val_positions = _draw(val_labels, val_classnames, min(shots, VAL_SHOTS_CAP), rng, allow_fewer)
    except ValueError as err:
        raise ValueError(f"{source_name}: {err}") from err
    val = val_source.select([rows[position] for position in val_positions])
    return datasets.DatasetDict({"train": train.select(train_rows), "val": val, "test": splits["test"]})

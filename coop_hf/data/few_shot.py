"""Seeded K-shot sampling of a classification split, independent of the row order of its input."""

from __future__ import annotations

import hashlib

import datasets
import numpy as np

VAL_SHOTS_CAP = 4
"""CoOp's validation split gets min(K, 4) images per class."""

_KEY_BATCH = 256


def row_keys(dataset: datasets.Dataset) -> list[str]:
    """A stable sort key per row: ``image_path``, else a hash of the image bytes, else the image path."""
    if "image_path" in dataset.column_names:
        return [str(path) for path in dataset["image_path"]]
    images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    keys = []
    for batch in images.iter(batch_size=_KEY_BATCH):
        for index, image in enumerate(batch["image"], start=len(keys)):
            if image.get("bytes") is not None:
                keys.append(hashlib.sha256(image["bytes"]).hexdigest())
            elif image.get("path"):
                keys.append(str(image["path"]))
            else:
                raise ValueError(f"Row {index} has neither image bytes nor an image path to order it by")
    return keys


def _check_shots(shots: int) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")


def few_shot_indices(
    dataset: datasets.Dataset, shots: int, seed: int, *, allow_fewer: bool = False
) -> list[int]:
    """Row indices of a K-shot draw: per class (in label order), ``shots`` rows chosen by a seeded Generator.

    Candidates of a class are sorted by a stable key first, so the draw does not depend on the row order.
    A class with fewer than ``shots`` rows raises unless ``allow_fewer``, which then takes all of its rows.
    """
    _check_shots(shots)
    label_feature = dataset.features["label"]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise ValueError(f"the 'label' column must be a datasets.ClassLabel, got {label_feature!r}")
    labels = np.asarray(dataset["label"], dtype=np.int64)
    keys = row_keys(dataset)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label, classname in enumerate(label_feature.names):
        candidates = sorted(np.flatnonzero(labels == label).tolist(), key=lambda row: (keys[row], row))
        if len(candidates) < shots:
            if not allow_fewer:
                raise ValueError(
                    f"Class {label} {classname!r} has {len(candidates)} image(s), fewer than shots={shots}; "
                    f"pass allow_fewer=True to take all of its images"
                )
            chosen.extend(candidates)
            continue
        picks = rng.choice(len(candidates), size=shots, replace=False)
        chosen.extend(candidates[pick] for pick in sorted(picks.tolist()))
    return chosen


def sample_few_shot(
    dataset: datasets.Dataset, shots: int, seed: int, *, allow_fewer: bool = False
) -> datasets.Dataset:
    """Exactly ``shots`` images per class drawn at random with ``numpy.random.default_rng(seed)``.

    Deterministic for a seed and independent of the input's row order; rows come out grouped by class.
    A class with fewer than ``shots`` images raises a ``ValueError`` naming it, unless ``allow_fewer=True``,
    which takes all of that class's images.
    """
    return dataset.select(few_shot_indices(dataset, shots, seed, allow_fewer=allow_fewer))


def build_few_shot_splits(
    splits: datasets.DatasetDict, shots: int, seed: int, *, allow_fewer: bool = False
) -> datasets.DatasetDict:
    """CoOp's few-shot protocol: train K per class, val min(K, 4) per class, test whole.

    Val is drawn from the "val" split, or, when there is none, from the train images not drawn for train.
    """
    _check_shots(shots)
    if "train" not in splits or "test" not in splits:
        raise ValueError(f"build_few_shot_splits needs 'train' and 'test' splits, got {list(splits)}")
    train = splits["train"]
    try:
        train_rows = few_shot_indices(train, shots, seed, allow_fewer=allow_fewer)
    except ValueError as err:
        raise ValueError(f"train split: {err}") from err
    if "val" in splits:
        val_source, source_name = splits["val"], "val split"
    else:
        taken = set(train_rows)
        val_source = train.select([row for row in range(len(train)) if row not in taken])
        source_name = "val (from the train images not drawn for train)"
    try:
        val = sample_few_shot(val_source, min(shots, VAL_SHOTS_CAP), seed, allow_fewer=allow_fewer)
    except ValueError as err:
        raise ValueError(f"{source_name}: {err}") from err
    return datasets.DatasetDict({"train": train.select(train_rows), "val": val, "test": splits["test"]})

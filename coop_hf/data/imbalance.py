"""Imbalanced few-shot support sets for the realistic evaluation protocol (`docs/studies/realistic.md`).

Real labelled sets are rarely K images of every class. The realistic protocol draws per-class shot counts from a
seeded long-tailed (exponential) profile, as the long-tailed benchmarks do (CIFAR-LT's profile, applied to the
support set as in "Few-Shot, Now for Real", MICCAI 2025):

    w_c = ratio ** (-c / (C - 1)),  c = 0, ..., C - 1        (w_0 = 1, w_{C-1} = 1 / ratio)
    n_c = mean_shots * C * w_c / sum(w)                       (so that the mean of n_c is mean_shots)

rounded by largest remainder (the total is round(mean_shots * C)), each at least 1 (which can raise the total a
little where the tail would round to 0); the head-to-tail ratio n_0 / n_{C-1} is `ratio` up to rounding. Which class
gets which count is a permutation drawn by `random.Random(seed)`, so the profile is deterministic per seed and the
head classes differ between seeds. With `ratio` 1 and a whole `mean_shots` every class gets `mean_shots`.

No validation split is drawn: the realistic protocol reads no validation image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import datasets

from .few_shot import ALLOW_FEWER_FLAG, _labels

PROFILE_SALT = "coop-hf long-tailed profile"
"""Mixed into the seed of the class permutation, so that it is not the stream that draws the images."""


def long_tailed_shots(num_classes: int, mean_shots: float, imbalance_ratio: float, seed: int) -> list[int]:
    """Per-class shot counts (indexed by class id) of the seeded exponential profile of this module's docstring."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not mean_shots >= 1:
        raise ValueError(f"--mean_shots must be at least 1, got {mean_shots!r}")
    if not imbalance_ratio >= 1:
        raise ValueError(f"--imbalance_ratio (largest over smallest shot count) must be >= 1, got {imbalance_ratio!r}")
    steps = max(num_classes - 1, 1)
    weights = [imbalance_ratio ** (-rank / steps) for rank in range(num_classes)]
    total = round(mean_shots * num_classes)
    exact = [total * weight / sum(weights) for weight in weights]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(num_classes), key=lambda rank: (counts[rank] - exact[rank], rank))
    for rank in by_remainder[: total - sum(counts)]:
        counts[rank] += 1
    counts = [max(count, 1) for count in counts]  # by rank: head first
    classes = list(range(num_classes))
    random.Random(f"{PROFILE_SALT} {seed}").shuffle(classes)
    shots = [0] * num_classes
    for rank, label in enumerate(classes):
        shots[label] = counts[rank]
    return shots


def imbalanced_indices(
    dataset: datasets.Dataset, shots_per_class: Sequence[int], seed: int, *, allow_fewer: bool = False
) -> list[int]:
    """Row indices of a draw of `shots_per_class[label]` images of each class with `random.Random(seed)` (classes in
    order of first appearance, as `few_shot_indices`). A class with fewer images raises a `ValueError` unless
    `allow_fewer`, which takes all of them."""
    labels, classnames = _labels(dataset)
    if len(shots_per_class) != len(classnames):
        raise ValueError(f"shots_per_class has {len(shots_per_class)} counts for {len(classnames)} classes")
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    short = {label: len(rows) for label, rows in by_class.items() if len(rows) < shots_per_class[label]}
    if short and not allow_fewer:
        listed = ", ".join(
            f"{label} {classnames[label]!r} ({count} < {shots_per_class[label]})"
            for label, count in list(short.items())[:10]
        )
        raise ValueError(
            f"{len(short)} class(es) have fewer images than their long-tailed shot count: {listed}. Lower "
            f"--mean_shots or --imbalance_ratio, or pass {ALLOW_FEWER_FLAG} to take all images of such classes."
        )
    rng = random.Random(seed)
    chosen: list[int] = []
    for label, rows in by_class.items():
        count = shots_per_class[label]
        chosen.extend(rng.sample(rows, count) if len(rows) >= count else rows)
    return chosen


def build_imbalanced_splits(
    splits: datasets.DatasetDict, shots_per_class: Sequence[int], seed: int, *, allow_fewer: bool = False
) -> datasets.DatasetDict:
    """The realistic protocol's splits: train drawn with `shots_per_class`, an empty "val" (no validation image is
    read or selected on), test whole."""
    if "train" not in splits or "test" not in splits:
        raise ValueError(f"build_imbalanced_splits needs 'train' and 'test' splits, got {list(splits)}")
    train = splits["train"]
    try:
        rows = imbalanced_indices(train, shots_per_class, seed, allow_fewer=allow_fewer)
    except ValueError as err:
        raise ValueError(f"train split: {err}") from err
    return datasets.DatasetDict({"train": train.select(rows), "val": train.select([]), "test": splits["test"]})

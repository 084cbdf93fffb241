"""CoCoOp's base/new class split (``subsample_classes`` of the official CoOp code), for the base-to-new protocol.

The classes are the labels present in the "train" split, sorted; the first ceil(n/2) are the *base* classes and
the rest the *new* ones (with an odd n, base gets the extra class). Every split keeps only the rows of the selected
classes, in their original order, relabelled by rank within the selection (0..m-1). The split is deterministic: no
random state is used. As in the reference, apply it AFTER the few-shot draw on all classes (train K, val
min(K, 4), one stream), so that the base shots of a seed are exactly its all-class draw restricted to the base
classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import datasets

from .records import column_values

SUBSAMPLES = ("all", "base", "new")


def subsample_labels(labels: Iterable[int], subsample: str) -> list[int]:
    """The labels ``subsample`` selects from the labels present: the first ceil(n/2) of them in sorted order for
    "base", the others for "new", all of them for "all"."""
    if subsample not in SUBSAMPLES:
        raise ValueError(f"subsample must be one of {', '.join(map(repr, SUBSAMPLES))}, got {subsample!r}.")
    present = sorted(set(labels))
    half = math.ceil(len(present) / 2)
    return {"all": present, "base": present[:half], "new": present[half:]}[subsample]


def subsample_classes(splits: datasets.DatasetDict, subsample: str) -> tuple[datasets.DatasetDict, list[str]]:
    """Keep the base or new classes of every split, relabelled by rank; returns (splits, their class names).

    The label set comes from the "train" split (the first split without one); the splits need a
    ``datasets.ClassLabel`` "label" column, whose names become those of the selected classes. "all" returns the
    splits unchanged.
    """
    source = splits["train"] if "train" in splits else next(iter(splits.values()))
    label_feature = source.features["label"]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise ValueError(f"subsample_classes needs a datasets.ClassLabel 'label' column, got {label_feature!r}.")
    selected = subsample_labels(column_values(source, "label"), subsample)
    if subsample == "all":
        return splits, list(label_feature.names)
    rank = {label: position for position, label in enumerate(selected)}
    classnames = [label_feature.names[label] for label in selected]
    subsampled = {}
    for name, split in splits.items():
        rows = [row for row, label in enumerate(column_values(split, "label")) if label in rank]
        features = split.features.copy()
        features["label"] = datasets.ClassLabel(names=classnames)
        subsampled[name] = split.select(rows).map(
            lambda labels: {"label": [rank[label] for label in labels]},
            input_columns="label",
            batched=True,
            features=features,
            desc=f"{subsample} classes",
        )
    return datasets.DatasetDict(subsampled), classnames

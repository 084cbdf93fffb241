"""The parsed form of an on-disk benchmark and its conversion to a ``datasets.DatasetDict``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import datasets

CLEAN_LABEL = "clean_label"
"""The column holding the true class of each row's image where its `label` may be wrong (label-noise studies):
a row is noisy exactly when `label != clean_label`."""

MAX_LISTED = 10
"""How many offending files or entries an error message lists before summarising the rest."""


def column_values(dataset: datasets.Dataset, name: str) -> list:
    """Every value of the column `name`, read at once from the Arrow table, whatever the dataset's format or
    transform. (`dataset[name]` is a lazy column in `datasets` 4 and later: `list()` or `numpy.asarray()` of it
    formats, and through a transform decodes, one row at a time, ~6x slower on a plain column.)"""
    return dataset.with_format(None)[name][:]


@dataclass
class LabeledFiles:
    """Class names plus, per split, the (absolute image path, label) pairs read from a dataset's layout."""

    classnames: list[str]
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def image_features(classnames: list[str]) -> datasets.Features:
    """The features every loaded split carries: a lazily decoded image, its label and its file path."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=classnames),
            "image_path": datasets.Value("string"),
        }
    )


def summarize(items: list[str]) -> str:
    """Indent and join the first ``MAX_LISTED`` items, saying how many more there are."""
    text = "\n  ".join(items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        text += f"\n  ... and {len(items) - MAX_LISTED} more"
    return "  " + text


def check_files_exist(parsed: LabeledFiles, source: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` listing every image path in ``parsed`` that is not a file."""
    missing = sorted({path for pairs in parsed.splits.values() for path, _ in pairs if not os.path.isfile(path)})
    if missing:
        raise FileNotFoundError(
            f"{source} lists {len(missing)} image file(s) that do not exist:\n{summarize(missing)}"
        )


def to_dataset_dict(parsed: LabeledFiles) -> datasets.DatasetDict:
    """Build one ``datasets.Dataset`` per split; images stay file paths and are decoded lazily."""
    features = image_features(parsed.classnames)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "image": [path for path, _ in pairs],
                    "label": [label for _, label in pairs],
                    "image_path": [path for path, _ in pairs],
                },
                features=features,
                split=datasets.NamedSplit(split),
            )
            for split, pairs in parsed.splits.items()
        }
    )

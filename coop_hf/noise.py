"""Seeded label noise on a few-shot split, for the noisy-label study of prompt tuning (PTNL, Wu et al. 2023).

Every scheme keeps the true class of each row's image in a `clean_label` column, so the noise can be audited:
a row is noisy exactly when `label != clean_label`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .baselines import zero_shot_weights
from .data.few_shot import row_keys
from .data.records import CLEAN_LABEL, column_values

NOISE_TYPES = ("none", "symmetric", "replace", "confusion")
RATE_WITHOUT_TYPE = (
    f"--noise_rate {{value}} without --noise_type adds no noise: pass --noise_type {' | '.join(NOISE_TYPES[1:])} (or "
    "drop --noise_rate)."
)
"""The refusal of a noise rate with no noise scheme (also checked before torch loads: `QUICK_NEEDS`)."""


@dataclass(frozen=True)
class NoiseSpec:
    """Label noise to inject into the few-shot train split, and into the val split with `val` (see
    `coop_hf.noise`); PTNL keeps the validation split clean."""

    noise_type: str = "none"
    rate: float = 0.0
    val: bool = False

    def __post_init__(self):
        if not self.active and self.rate != 0:
            raise ValueError(RATE_WITHOUT_TYPE.format(value=f"{self.rate:g}"))

    @property
    def active(self) -> bool:
        return self.noise_type != "none"

    def fields(self) -> dict[str, Any]:
        """The noise settings as a run configuration records them."""
        return {"noise_type": self.noise_type, "noise_rate": self.rate, "noise_val": self.val} if self.active else {}


NO_NOISE = NoiseSpec()


@dataclass(frozen=True)
class NoiseReport:
    """What `inject_label_noise` did.

    Attributes:
        noise_type: The scheme ("none", "symmetric", "replace" or "confusion").
        requested_rate: The rate asked for.
        actual_rate: Fraction of rows whose label is not the class of their image (`label != clean_label`).
        seed: Seed of the draw.
        rows_per_class: Class name -> rows labelled with that class.
        noisy_per_class: Class name -> rows the scheme corrupted for that class: its images relabelled to another
            class (symmetric, confusion), or its shots replaced by images of other classes (replace).
    """

    noise_type: str
    requested_rate: float
    actual_rate: float
    seed: int
    rows_per_class: dict[str, int]
    noisy_per_class: dict[str, int]

    @property
    def num_noisy(self) -> int:
        return sum(self.noisy_per_class.values())


def inject_label_noise(
    dataset: datasets.Dataset,
    noise_type: str,
    rate: float,
    seed: int,
    *,
    pool: datasets.Dataset | None = None,
    class_similarity: np.ndarray | torch.Tensor | None = None,
) -> tuple[datasets.Dataset, NoiseReport]:
    """Corrupt `round(rate * K_c)` of the K_c rows of every class c (rounded half up), drawn with
    `numpy.random.default_rng(seed)`; returns the noisy split (same row order, plus `clean_label`) and a report.

    Schemes:
        none: no change (rate must be 0).
        symmetric: the chosen rows get a label drawn uniformly from the other classes.
        replace: the PTNL scheme. The chosen shots are replaced by images of other classes drawn uniformly, without
            replacement, from `pool` (the full train split; images already in `dataset` are never drawn); the
            rows keep the label of the class they replace, so the image is wrong and the label says this class.
        confusion: the chosen rows get the label of the class most similar to their own, from
            `class_similarity` [classes, classes] (e.g. [`zero_shot_class_similarity`]; the diagonal is ignored).
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"Unknown noise_type {noise_type!r}: use one of {', '.join(map(repr, NOISE_TYPES))}.")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"rate is the fraction of noisy shots per class and must lie in [0, 1), got {rate!r}.")
    if noise_type == "none" and rate != 0:
        raise ValueError(f"noise_type='none' adds no noise, so rate must be 0, got {rate!r}.")
    label_feature = _class_label(dataset, "dataset")
    if CLEAN_LABEL in dataset.column_names:
        raise ValueError(
            f"The dataset already has a {CLEAN_LABEL!r} column, so noise was injected before: start from the clean "
            "few-shot split."
        )
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: inject noise into a few-shot split with rows.")

    labels = np.asarray(column_values(dataset, "label"), dtype=np.int64)
    num_classes = label_feature.num_classes
    class_rows = [np.flatnonzero(labels == label) for label in range(num_classes)]
    counts = [_noisy_count(rate, len(rows)) for rows in class_rows]
    rng = np.random.default_rng(seed)

    if noise_type == "replace":
        noisy = _replace(dataset, labels, pool, label_feature, class_rows, counts, rng)
    else:
        new_labels = labels.copy()
        if noise_type == "symmetric":
            _flip_symmetric(new_labels, label_feature, class_rows, counts, rng)
        elif noise_type == "confusion":
            _flip_confusion(new_labels, class_similarity, num_classes, class_rows, counts, rng)
        noisy = _with_labels(dataset, new_labels, labels, label_feature)

    noisy_labels = np.asarray(column_values(noisy, "label"), dtype=np.int64)
    clean_labels = np.asarray(column_values(noisy, CLEAN_LABEL), dtype=np.int64)
    report = NoiseReport(
        noise_type=noise_type,
        requested_rate=float(rate),
        actual_rate=float((noisy_labels != clean_labels).mean()),
        seed=seed,
        rows_per_class={name: int((noisy_labels == c).sum()) for c, name in enumerate(label_feature.names)},
        noisy_per_class={name: counts[c] for c, name in enumerate(label_feature.names)},
    )
    return noisy, report


@torch.no_grad()
def zero_shot_class_similarity(
    clip: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, classnames: list[str], templates: list[str]
) -> np.ndarray:
    """[classes, classes] cosine similarity of CLIP's zero-shot class text features (`zero_shot_weights`), the
    `class_similarity` of the "confusion" noise."""
    weights = zero_shot_weights(clip, tokenizer, classnames, templates).float()
    return (weights @ weights.t()).cpu().numpy()


def _class_label(dataset: datasets.Dataset, name: str) -> datasets.ClassLabel:
    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"The {name}'s 'label' column must be a datasets.ClassLabel, got {feature!r}.")
    return feature


def _noisy_count(rate: float, rows: int) -> int:
    # Half up rather than Python's half-to-even round, and with a little slack so that e.g. 0.15 * 10 (which is
    # 1.4999999999999998 in floating point) gives 2.
    return math.floor(rate * rows + 0.5 + 1e-9)


def _pick(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    """`count` of `rows`, drawn without replacement and returned in row order."""
    return np.sort(rows[rng.choice(len(rows), size=count, replace=False)])


def _flip_symmetric(
    labels: np.ndarray,
    label_feature: datasets.ClassLabel,
    class_rows: list[np.ndarray],
    counts: list[int],
    rng: np.random.Generator,
) -> None:
    num_classes = label_feature.num_classes
    if num_classes < 2 and any(counts):
        raise ValueError("Symmetric noise needs at least two classes to relabel images to another class.")
    for label, (rows, count) in enumerate(zip(class_rows, counts, strict=True)):
        if count:
            other = rng.integers(0, num_classes - 1, size=count)
            labels[_pick(rng, rows, count)] = other + (other >= label)  # uniform over the classes except `label`


def _flip_confusion(
    labels: np.ndarray,
    class_similarity: np.ndarray | torch.Tensor | None,
    num_classes: int,
    class_rows: list[np.ndarray],
    counts: list[int],
    rng: np.random.Generator,
) -> None:
    if class_similarity is None:
        raise ValueError(
            "noise_type='confusion' needs class_similarity= a [classes, classes] matrix, e.g. "
            "zero_shot_class_similarity(clip, tokenizer, classnames, templates)."
        )
    similarity = np.array(class_similarity.cpu() if torch.is_tensor(class_similarity) else class_similarity, float)
    if similarity.shape != (num_classes, num_classes):
        raise ValueError(
            f"class_similarity has shape {similarity.shape} but the dataset has {num_classes} classes: pass a "
            f"[{num_classes}, {num_classes}] matrix in label order."
        )
    if num_classes < 2 and any(counts):
        raise ValueError("Confusion noise needs at least two classes to relabel images to another class.")
    np.fill_diagonal(similarity, -np.inf)
    most_similar = similarity.argmax(axis=1)
    for label, (rows, count) in enumerate(zip(class_rows, counts, strict=True)):
        if count:
            labels[_pick(rng, rows, count)] = most_similar[label]


def _replace(
    dataset: datasets.Dataset,
    labels: np.ndarray,
    pool: datasets.Dataset | None,
    label_feature: datasets.ClassLabel,
    class_rows: list[np.ndarray],
    counts: list[int],
    rng: np.random.Generator,
) -> datasets.Dataset:
    if pool is None:
        raise ValueError(
            "noise_type='replace' needs pool= the full train split, to draw images of other classes from."
        )
    pool_feature = _class_label(pool, "pool")
    if pool_feature.names != label_feature.names:
        raise ValueError(
            "The pool's class list differs from the dataset's: pass the train split the few-shot split was drawn from."
        )
    missing = [column for column in dataset.column_names if column not in pool.column_names]
    if missing:
        raise ValueError(f"The pool lacks the dataset's columns {missing}: pass the full train split.")
    pool = pool.select_columns(dataset.column_names)
    taken = set(row_keys(dataset))
    pool_keys = row_keys(pool)
    # Candidates in key order, so the draw does not depend on the pool's row order.
    order = np.array(sorted(range(len(pool)), key=lambda row: (pool_keys[row], row)), dtype=np.int64)
    order_labels = np.asarray(column_values(pool, "label"), dtype=np.int64)[order]
    available = np.array([pool_keys[row] not in taken for row in order], dtype=bool)

    source = np.arange(len(dataset))  # row i of the result: row i of `dataset`, or len(dataset) + j of pool rows j
    drawn: list[int] = []
    for label, (rows, count) in enumerate(zip(class_rows, counts, strict=True)):
        if not count:
            continue
        candidates = np.flatnonzero(available & (order_labels != label))
        if len(candidates) < count:
            raise ValueError(
                f"Class {label} {label_feature.names[label]!r} needs {count} image(s) of other classes to replace "
                f"{count} of its {len(rows)} shots, but the pool has only {len(candidates)} unused other-class "
                "image(s) outside the few-shot split: lower the rate or pass the full train split as pool."
            )
        chosen = candidates[rng.choice(len(candidates), size=count, replace=False)]
        available[chosen] = False
        source[_pick(rng, rows, count)] = len(dataset) + len(drawn) + np.arange(count)
        drawn.extend(order[chosen].tolist())

    if not drawn:
        return _with_labels(dataset, labels, labels, label_feature)
    replacements = pool.select(drawn).cast(dataset.features)
    combined = datasets.concatenate_datasets([dataset, replacements]).select(source.tolist())
    clean = np.concatenate([labels, np.asarray(column_values(replacements, "label"), dtype=np.int64)])[source]
    return _with_labels(combined, labels, clean, label_feature)


def _with_labels(
    dataset: datasets.Dataset, labels: np.ndarray, clean: np.ndarray, label_feature: datasets.ClassLabel
) -> datasets.Dataset:
    """`dataset` with its label column set to `labels` and the true classes in `clean_label`, columns in order."""
    columns = dataset.column_names
    dataset = dataset.remove_columns("label")
    dataset = dataset.add_column("label", labels.tolist(), feature=label_feature)
    dataset = dataset.add_column(CLEAN_LABEL, clean.tolist(), feature=label_feature)
    return dataset.select_columns([*columns, CLEAN_LABEL])

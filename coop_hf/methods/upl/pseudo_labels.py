"""UPL's pseudo-labels (Huang et al., "Unsupervised Prompt Learning for Vision-Language Models", 2022): label
unlabeled images with zero-shot CLIP and keep the most confident ones per predicted class."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from ...data import column_values

UPL_TOP_K = 16
"""Pseudo-labelled images kept per class in UPL."""

TRUE_LABEL = "true_label"
PSEUDO_CONFIDENCE = "pseudo_confidence"


def select_confident_pseudo_labels(
    logits: torch.Tensor, top_k: int = UPL_TOP_K
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UPL's selection: label every image with the argmax of its zero-shot probabilities and keep, per predicted
    class, the `top_k` most confident images (a class predicted fewer times keeps all of its images).

    Args:
        logits: [images, classes] zero-shot logits of the unlabeled images.
        top_k: Images kept per predicted class.

    Returns:
        `(indices, pseudo_labels, confidences)`, each [kept]: row indices into `logits`, their predicted class and
        its softmax probability, grouped by class in label order and by decreasing confidence within a class
        (equal confidences by row index).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k is the number of images kept per class and must be an integer >= 1, got {top_k!r}.")
    if logits.dim() != 2:
        raise ValueError(f"logits must be [images, classes], got shape {tuple(logits.shape)}.")
    confidences, predictions = logits.detach().float().softmax(dim=-1).max(dim=-1)
    confidences, predictions = confidences.cpu().numpy(), predictions.cpu().numpy()
    # lexsort sorts by the last key first: by class, then by decreasing confidence, then by row index.
    order = np.lexsort((np.arange(len(predictions)), -confidences, predictions))
    rank_in_class = np.arange(len(order)) - np.searchsorted(predictions[order], predictions[order])
    kept = torch.from_numpy(order[rank_in_class < top_k])
    return kept, torch.from_numpy(predictions)[kept], torch.from_numpy(confidences)[kept]


def pseudo_label_dataset(
    dataset: datasets.Dataset,
    logits: torch.Tensor,
    top_k: int = UPL_TOP_K,
    *,
    classnames: list[str] | None = None,
) -> datasets.Dataset:
    """The UPL training split: the rows of `dataset` kept by [`select_confident_pseudo_labels`], with their
    pseudo-label as "label" and its probability as "pseudo_confidence".

    A true "label" column of `dataset` is kept as "true_label" (never used for training; see
    [`pseudo_label_accuracy`]). Without one, `classnames` names the classes of the logits' columns.
    """
    if len(logits) != len(dataset):
        raise ValueError(
            f"logits has {len(logits)} rows but the dataset has {len(dataset)}: compute the logits on this split, "
            "in its row order."
        )
    columns = dataset.column_names
    true_feature = dataset.features.get("label")
    if true_feature is not None:
        if not isinstance(true_feature, datasets.ClassLabel):
            raise ValueError(f"The dataset's 'label' column must be a datasets.ClassLabel, got {true_feature!r}.")
        if classnames is not None and list(classnames) != true_feature.names:
            raise ValueError("classnames differ from the class list of the dataset's 'label' column.")
        classnames = true_feature.names
    if classnames is None:
        raise ValueError("The dataset has no 'label' column: pass classnames= the class names of the logits' columns.")
    if logits.shape[-1] != len(classnames):
        raise ValueError(f"logits has {logits.shape[-1]} classes but the class list has {len(classnames)}.")

    indices, pseudo_labels, confidences = select_confident_pseudo_labels(logits, top_k)
    selected = dataset.select(indices.tolist())
    if true_feature is None:
        columns = [*columns, "label"]
    else:
        selected = selected.rename_column("label", TRUE_LABEL)
        columns = [*columns, TRUE_LABEL]
    selected = selected.add_column("label", pseudo_labels.tolist(), feature=datasets.ClassLabel(names=classnames))
    selected = selected.add_column(PSEUDO_CONFIDENCE, confidences.tolist(), feature=datasets.Value("float32"))
    return selected.select_columns([*columns, PSEUDO_CONFIDENCE])


def pseudo_label_accuracy(dataset: datasets.Dataset) -> float:
    """Fraction (0 to 1) of the rows of a [`pseudo_label_dataset`] whose pseudo-label is their true label."""
    if TRUE_LABEL not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {TRUE_LABEL!r} column: pseudo-label a split that has its true labels to measure this."
        )
    if len(dataset) == 0:
        raise ValueError("The pseudo-labelled dataset is empty.")
    labels, true_labels = (np.asarray(column_values(dataset, name)) for name in ("label", TRUE_LABEL))
    return float((labels == true_labels).mean())

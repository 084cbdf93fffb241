"""Classification accuracy as an `evaluate` metric module, usable offline (no Hub download)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Top-1 accuracy and macro accuracy (the mean of the per-class accuracies), as reported by the
CoOp protocol. Macro accuracy weighs every class equally on unbalanced test sets."""


class ClassificationAccuracy(evaluate.Metric):
    """`accuracy` and `macro_accuracy` (mean over the classes present in the references), as fractions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: integer class ids.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if references.size == 0:
            raise ValueError("Accuracy of an empty evaluation set is undefined: the test split has no images.")
        correct = predictions == references
        per_class = [correct[references == label].mean() for label in np.unique(references)]
        return {"accuracy": float(correct.mean()), "macro_accuracy": float(np.mean(per_class))}

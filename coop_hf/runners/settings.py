"""What a study fixes for every run it makes: one object instead of long keyword lists through every runner."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..hub_access import NOT_A_MODEL
from ..losses import DEFAULT_GCE_Q, loss_from_name
from ..methods.recipes import PROTOCOLS
from ..noise import NO_NOISE, NoiseSpec

SHOTS_MESSAGE = (
    "--shots takes the number of training images per class, at least 1; got {value} (zero-shot CLIP is --method "
    "zeroshot)."
)
QUICK_BOUNDS: dict[str, dict[str, Any]] = {
    "shots": {"min": 1, "message": SHOTS_MESSAGE},
    "noise_rate": {"min": 0, "below": 1, "message": "--noise_rate is the fraction of noisy shots per class, in "
                   "[0, 1); got {value}."},
    "gce_q": {"above": 0, "max": 1, "message": "--gce_q must lie in (0, 1]; got {value}."},
    "cached_views": {"min": 0, "message": "--cached_views takes a number of views, 0 or more; got {value}."},
}  # fmt: skip
"""Bounds of numeric flags that the scripts check before torch loads (`examples/quick_help.py`, from the generated
`examples/help/<script>.json`); the package checks them again where it uses them."""
QUICK_PATHS: dict[str, dict[str, str]] = {
    "model_name_or_path": {"exists": "when local", "message": NOT_A_MODEL.replace("{flag}", "--model_name_or_path")},
    "data_dir": {"exists": "always", "message": "--data_dir {value!r} is not a folder: give the folder that holds the "
                 "datasets in CoOp's layout (see DATASETS.md of KaiyangZhou/CoOp)."},
}  # fmt: skip
"""Path flags the scripts check before torch loads: a folder that must exist (`model_name_or_path` only when the
value is written as a path: /, ., ~)."""


@dataclass(frozen=True)
class RunSettings:
    """The protocol and objective of a study's runs, as the flags give them.

    Attributes:
        shots: Training images per class (K).
        seeds: One run per seed.
        loss: "ce" or "gce" (generalised cross-entropy, with `gce_q`).
        gce_q: q of the generalised cross-entropy (None: the default).
        noise: The label noise injected into the few-shot splits.
        allow_fewer_shots: Take all images of a class with fewer than `shots` (as the reference), else an error.
        callbacks: Extra `TrainerCallback`s of every training run.
        protocol: The study's protocol (`coop_hf.methods.recipes.PROTOCOLS`): whose recipe each method applies.
    """

    shots: int
    seeds: list[int]
    loss: str = "ce"
    gce_q: float | None = None
    noise: NoiseSpec = NO_NOISE
    allow_fewer_shots: bool = False
    callbacks: list | None = None
    protocol: str = "few_shot"

    @classmethod
    def from_arguments(cls, arguments: Any, callbacks: list | None = None, protocol: str = "few_shot") -> RunSettings:
        """The settings of an `ExperimentArguments` (or a study's arguments built on it) under `protocol`."""
        return cls(
            shots=arguments.shots,
            seeds=list(arguments.seeds),
            loss=arguments.loss,
            gce_q=arguments.gce_q,
            noise=arguments.noise(),
            allow_fewer_shots=arguments.allow_fewer_shots,
            callbacks=callbacks,
            protocol=protocol,
        )

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}.")

    def check_shots(self) -> None:
        """Refuse a shot count below 1 before anything is written (a run that learns from labelled shots)."""
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 1:
            raise ValueError(SHOTS_MESSAGE.format(value=repr(self.shots)))

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    def loss_fields(self) -> dict[str, Any]:
        """Results-level loss fields: the loss name, and q for the generalised cross-entropy."""
        return {"loss": self.loss} | ({"gce_q": self.gce_q or DEFAULT_GCE_Q} if self.loss == "gce" else {})

    def loss_function(self) -> Callable | None:
        """The Trainer's `compute_loss_func` of `loss` (None: the model's own loss)."""
        return loss_from_name(self.loss, **({"q": self.gce_q} if self.gce_q is not None else {}))

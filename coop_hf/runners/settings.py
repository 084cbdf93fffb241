"""What a study fixes for every run it makes: one object instead of long keyword lists through every runner."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data.imbalance import long_tailed_shots
from ..hub_access import NOT_A_MODEL, NOT_A_PROMPT
from ..losses import DEFAULT_GCE_Q, loss_from_name
from ..methods.recipes import PROTOCOLS
from ..noise import NO_NOISE, RATE_WITHOUT_TYPE, NoiseSpec
from ..run_directory import UNWRITABLE
from .realistic import DEFAULT_IMBALANCE_RATIO, check_evaluation

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
    "top_k": {"min": 1, "message": "--top_k must be at least 1; got {value}."},
    "batch_size": {"min": 1, "message": "--batch_size takes a number of images, at least 1; got {value}."},
    "num_examples": {"min": 0, "message": "--num_examples takes a number of images, 0 or more; got {value}."},
    "port": {"min": 1, "max": 65535, "message": "--port takes a TCP port, 1 to 65535; got {value}."},
}  # fmt: skip
"""Bounds of numeric flags that the scripts check before torch loads (`examples/quick_help.py`, from the generated
`examples/help/<script>.json`); the package checks them again where it uses them."""
QUICK_PATHS: dict[str, dict[str, str]] = {
    "model_name_or_path": {"check": "model", "message": NOT_A_MODEL.replace("{flag}", "--model_name_or_path")},
    "tokenizer_from": {"check": "model", "message": NOT_A_MODEL.replace("{flag}", "--tokenizer_from")},
    "prompt": {"check": "model", "message": NOT_A_PROMPT.replace("{flag}", "--prompt")},
    "prompts": {"check": "model", "message": NOT_A_PROMPT.replace("{flag}", "--prompts")},
    "data_dir": {"check": "folder", "message": "--data_dir {value!r} is not a folder: give the folder that holds the "
                 "datasets in CoOp's layout (see DATASETS.md of KaiyangZhou/CoOp)."},
    "examples": {"check": "exists", "message": "--examples {value!r} is neither an image nor a folder."},
    "output_dir": {"check": "writable", "message": UNWRITABLE.replace("{flag}", "--output_dir")},
    "feature_cache_dir": {"check": "writable", "message": UNWRITABLE.replace("{flag}", "--feature_cache_dir")},
}  # fmt: skip
"""Path flags the scripts check before torch loads: "folder", a folder that exists; "model", a folder, or a value
that can name a model (not written as a path: /, ., ~; a Hub id's one / at most, or a "scheme:" name such as
open_clip's); "exists", a file or folder that exists; "writable", a folder this process can write in or create
(`run_directory.check_writable`, which `parse_flags` applies after parsing too, defaults included)."""
QUICK_NEEDS: dict[str, dict[str, str]] = {
    "noise_rate": {"needs": "noise_type", "default": "none", "message": RATE_WITHOUT_TYPE},
}
"""Flags whose non-zero value needs another flag given, with another value than its default, checked before torch
loads (and by the package where it uses them)."""


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
        evaluation: The evaluation protocol (`coop_hf.runners.realistic`): "papers" or "realistic".
        imbalance_ratio: Under "realistic": largest over smallest per-class shot count.
        mean_shots: Under "realistic": mean shots per class (None: `shots`).
    """

    shots: int
    seeds: list[int]
    loss: str = "ce"
    gce_q: float | None = None
    noise: NoiseSpec = NO_NOISE
    allow_fewer_shots: bool = False
    callbacks: list | None = None
    protocol: str = "few_shot"
    evaluation: str = "papers"
    imbalance_ratio: float = DEFAULT_IMBALANCE_RATIO
    mean_shots: float | None = None

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
            evaluation=getattr(arguments, "protocol", "papers"),
            imbalance_ratio=getattr(arguments, "imbalance_ratio", DEFAULT_IMBALANCE_RATIO),
            mean_shots=getattr(arguments, "mean_shots", None),
        )

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}.")
        check_evaluation(self.evaluation)

    @property
    def realistic(self) -> bool:
        """Whether the runs follow the realistic evaluation protocol."""
        return self.evaluation == "realistic"

    def shots_per_class(self, num_classes: int, seed: int) -> list[int] | None:
        """The seed's long-tailed shot counts per class under the realistic protocol (None: `shots` each)."""
        if not self.realistic:
            return None
        mean = self.shots if self.mean_shots is None else self.mean_shots
        return long_tailed_shots(num_classes, mean, self.imbalance_ratio, seed)

    def evaluation_fields(self) -> dict[str, Any]:
        """The evaluation protocol as run configurations and results record it (nothing under the papers')."""
        if not self.realistic:
            return {}
        mean = self.shots if self.mean_shots is None else self.mean_shots
        return {"evaluation": {"protocol": "realistic", "imbalance_ratio": self.imbalance_ratio, "mean_shots": mean}}

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

"""Command-line arguments shared by the example scripts (parsed with `transformers.HfArgumentParser`).

The prompt flags have one source: the prompt settings of the methods' configs (`PromptArguments` is built from
them), so a method's new setting is a flag without any code here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser

from ..losses import DEFAULT_GCE_Q
from ..noise import NOISE_TYPES, NoiseSpec
from .methods import METHOD_NAMES, PROMPT_METHODS
from .realistic import DEFAULT_IMBALANCE_RATIO, EVALUATION_PROTOCOLS
from .shard import ShardArguments


@dataclass
class ExperimentArguments:
    """The experiment of `examples/train.py`: base CLIP, dataset, few-shot protocol, method, prompt, loss, noise."""

    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch32", metadata={"help": "Base CLIP: Hub id or local path."}
    )
    dataset: str = field(
        default="dpdl-benchmark/oxford_flowers102",
        metadata={
            "help": "A CoOp benchmark name (oxford_flowers, caltech101, oxford_pets, stanford_cars, fgvc_aircraft, "
            "food101, sun397, dtd, eurosat, ucf101, imagenet, imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r) "
            "with --data_dir, or a Hub id / local image-classification dataset."
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the per-dataset folders in the CoOp layout."}
    )
    shots: int = field(default=16, metadata={"help": "Training images per class (K)."})
    seeds: list[int] = field(default_factory=lambda: [1], metadata={"help": "Seeds, e.g. --seeds 1 2 3."})
    method: str = field(default="coop", metadata={"help": f"One of {', '.join(METHOD_NAMES)}."})
    allow_fewer_shots: bool = field(
        default=False,
        metadata={"help": "Take all images of a class that has fewer than --shots, as CoOp does (default: an error)."},
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Where image features are cached (default: the datasets cache)."}
    )
    loss: str = field(
        default="ce",
        metadata={"help": "ce (cross-entropy) or gce (generalised cross-entropy).", "choices": ["ce", "gce"]},
    )
    gce_q: float = field(default=DEFAULT_GCE_Q, metadata={"help": "q of the generalised cross-entropy, in (0, 1]."})
    noise_type: str = field(
        default="none",
        metadata={"help": "Label noise: none | symmetric | replace | confusion.", "choices": list(NOISE_TYPES)},
    )
    noise_rate: float = field(default=0.0, metadata={"help": "Fraction of noisy shots per class, in [0, 1)."})
    noise_val: bool = field(
        default=False,
        metadata={"help": "Also corrupt the few-shot validation split (default: it stays clean, as in PTNL)."},
    )
    protocol: str = field(
        default="papers",
        metadata={
            "help": "Evaluation protocol: papers (K shots per class, validation split, per-dataset recipes) or "
            "realistic (long-tailed shots, no validation, one recipe; docs/studies/realistic.md).",
            "choices": list(EVALUATION_PROTOCOLS),
        },
    )
    imbalance_ratio: float = field(
        default=DEFAULT_IMBALANCE_RATIO,
        metadata={"help": "--protocol realistic: largest over smallest per-class shot count (1: balanced)."},
    )
    mean_shots: float | None = field(
        default=None, metadata={"help": "--protocol realistic: mean shots per class (default: --shots)."}
    )

    def __post_init__(self):
        self.noise()  # a --noise_rate without --noise_type is refused as the flags are parsed

    def noise(self) -> NoiseSpec:
        """The label noise these flags ask for."""
        return NoiseSpec(self.noise_type, self.noise_rate, val=self.noise_val)


def setting_help(config_class: type, name: str) -> str:
    """The description of setting `name` in the config class's docstring (its "Args:" entry)."""
    match = re.search(rf"^\s*{name} \(`[^`]*`(?:, [^)]*)?\):\n((?:\s{{12,}}.*\n?)+)", config_class.__doc__ or "", re.M)
    return " ".join(match.group(1).split()) if match else ""


def _prompt_arguments() -> type:
    """A dataclass with one optional flag per prompt setting of every prompt method's config; a flag left out
    takes the method's default."""
    settings: dict[str, dict[str, Any]] = {}
    for name, method in PROMPT_METHODS.items():
        config_class = method.model_class.config_class
        for setting in config_class.prompt_settings():
            config_field = config_class.__dataclass_fields__[setting]
            entry = settings.setdefault(setting, {"type": config_field.type, "defaults": [], "helps": {}})
            default = {config_field.name: config_field.default, **method.defaults, **method.settings}[setting]
            entry["defaults"].append(f"{name}: {default!r}")
            entry["helps"].setdefault(setting_help(config_class, setting), []).append(name)
    fields = []
    for setting, entry in settings.items():
        annotation = entry["type"]  # a string where the config module postpones annotations, else the type
        if isinstance(annotation, str):
            annotation = annotation.replace(" | None", "") + " | None"
        else:
            annotation = annotation | None
        helps = entry["helps"]
        described = (
            next(iter(helps)) if len(helps) == 1 else "; ".join(f"{', '.join(m)}: {h}" for h, m in helps.items())
        )
        help_text = f"{described} Default by method: {', '.join(entry['defaults'])}."
        fields.append((setting, annotation, field(default=None, metadata={"help": help_text})))
    return dataclasses.make_dataclass("PromptArguments", fields, namespace={"__module__": __name__})


PromptArguments = _prompt_arguments()
PromptArguments.__doc__ = "The prompt settings of every prompt method, as flags (None: the method's default)."


def prompt_settings(prompt: Any, method: str) -> dict[str, Any]:
    """The prompt flags given on the command line, for `method` (none for a baseline, which learns no prompt); a
    flag that the prompt method does not have is an error."""
    given = {key: value for key, value in dataclasses.asdict(prompt).items() if value is not None}
    if method not in PROMPT_METHODS:
        return {}
    known = PROMPT_METHODS[method].model_class.config_class.prompt_settings()
    unknown = [key for key in given if key not in known]
    if unknown:
        raise ValueError(
            f"--method {method} has no setting {', '.join(f'--{key}' for key in unknown)}; its prompt settings: "
            f"{', '.join(f'--{key}' for key in known)}."
        )
    return given


VARIANT_EXAMPLE = "coop:class_token_position=middle,class_specific_context=true"


def method_of(entry: str) -> str:
    """The --method name of a study's method entry: "coop" of "coop:class_token_position=middle"."""
    return entry.partition(":")[0]


def variant_settings(entry: str) -> dict[str, Any]:
    """The prompt settings of a study's method entry "<method>:<setting>=<value>[,<setting>=<value>...]" (a variant,
    e.g. CoOp with the class name in the middle), typed as the flags are: read by the prompt flags' own parser.
    {} for a plain method name."""
    method, _, variant = entry.partition(":")
    if not variant:
        return {}
    if method not in PROMPT_METHODS:
        raise ValueError(f"--method {entry!r}: only prompt methods take settings; list {method} alone.")
    argv, fields = [], {field.name: field for field in dataclasses.fields(PromptArguments)}
    for pair in variant.split(","):
        key, equals, value = (part.strip() for part in pair.partition("="))
        if not equals or not key or not value:
            raise ValueError(
                f"--method {entry!r}: write a variant as <method>:<setting>=<value>[,<setting>=<value>...], e.g. "
                f"{VARIANT_EXAMPLE} (a list setting's values apart by spaces: clip-lora:lora_params=q v)."
            )
        listed = key in fields and "list" in str(fields[key].type)
        argv += [f"--{key}", *value.split()] if listed else [f"--{key}={value}"]  # "=": a value may start with "-"
    parser = HfArgumentParser(PromptArguments, exit_on_error=False, allow_abbrev=False)
    try:
        prompt, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except argparse.ArgumentError as error:
        raise ValueError(f"--method {entry!r}: {error}.") from None
    if remaining:
        flag = remaining[0].partition("=")[0]
        raise ValueError(f"--method {entry!r}: {flag} is no prompt setting (see --help {method}).")
    try:
        return prompt_settings(prompt, method)
    except ValueError as error:
        raise ValueError(f"--method {entry!r}: {error}") from None


def settings_by_method(prompt: Any, methods: list[str]) -> dict[str, dict[str, Any]]:
    """The prompt flags given, per prompt method entry of a study comparing `methods`: each flag goes to the methods
    that have the setting (a flag that none of them has is an error), under a variant's own settings
    (`variant_settings`)."""
    given = {key: value for key, value in dataclasses.asdict(prompt).items() if value is not None}
    variants = {entry: variant_settings(entry) for entry in methods}  # refuses a baseline's or a bad setting first
    entries = [entry for entry in methods if method_of(entry) in PROMPT_METHODS]
    known = {entry: PROMPT_METHODS[method_of(entry)].model_class.config_class.prompt_settings() for entry in entries}
    unused = [key for key in given if not any(key in settings for settings in known.values())]
    if unused:
        chosen = ", ".join(dict.fromkeys(map(method_of, entries))) or "none"
        raise ValueError(
            f"{', '.join(f'--{key}' for key in unused)} is a setting of none of the prompt methods ({chosen}): "
            "drop it, or add a method that has it."
        )
    return {
        entry: {**{key: value for key, value in given.items() if key in settings}, **variants[entry]}
        for entry, settings in known.items()
    }


@dataclass
class SeveralDatasetsArguments(ExperimentArguments):
    """`examples/train.py`'s experiment flags with one or more datasets (the base-to-new and noise studies)."""

    dataset: list[str] = field(
        default_factory=lambda: [ExperimentArguments.dataset],
        metadata={
            "aliases": ["--datasets"],
            "help": "One or more datasets, each a CoOp benchmark name (with --data_dir) or a Hub id / local "
            "image-classification dataset (where each one's outputs go: the description above).",
        },
    )


@dataclass
class NoiseStudyArguments(ShardArguments):
    """The label-noise study of `examples/train_noisy.py`."""

    noise_rates: list[float] = field(
        default_factory=lambda: [0.0, 0.125, 0.25, 0.5], metadata={"help": "Noise rates to sweep, e.g. 0 0.25 0.5."}
    )
    study_noise_type: str = field(
        default="replace", metadata={"help": "Scheme of the sweep: replace (the PTNL study) | symmetric | confusion."}
    )
    study_methods: list[str] = field(
        default_factory=lambda: ["coop:ce", "coop:gce", "linear-probe"],
        metadata={
            "help": "Models compared, each `<method>[:ce|gce]`: linear-probe or a prompt method of --method "
            "(e.g. coop:ce coop:gce cocoop:gce)."
        },
    )
    n_ctx_values: list[int] | None = field(
        default=None,
        metadata={"help": "Context-length ablation: train each prompt method once per n_ctx value (e.g. 4 8 16)."},
    )


@dataclass
class UPLArguments:
    """Unsupervised prompt learning in `examples/train_upl.py`."""

    pseudo_top_k: int | None = field(
        default=None, metadata={"help": "Most confident pseudo-labelled images kept per class (default: --shots)."}
    )
    pseudo_label_templates: str = field(
        default="dataset", metadata={"help": "Zero-shot pseudo-labels from the dataset template or the ensemble."}
    )
    pseudo_label_models: list[str] | None = field(
        default=None,
        metadata={
            "help": "CLIP backbones (Hub ids or paths) whose zero-shot probabilities are averaged to pseudo-label "
            "(UPL*); default: --model_name_or_path alone."
        },
    )


FEW_SHOT_BENCHMARKS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft", "sun397",
    "dtd", "eurosat", "ucf101",
)  # fmt: skip
"""The 11 datasets of CoOp's few-shot study, in the paper's order."""


@dataclass
class SweepArguments(ShardArguments, ExperimentArguments):
    """The grid of `examples/sweep.py`: every dataset x method x shot count, each over `seeds`, on one frozen CLIP."""

    dataset: list[str] = field(
        default_factory=lambda: list(FEW_SHOT_BENCHMARKS),
        metadata={
            "help": "Datasets, each as --dataset of examples/train.py (CoOp benchmark names with --data_dir, or Hub "
            "ids / local folders). Default: the 11 datasets of CoOp's few-shot study."
        },
    )
    shots: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "Training images per class (K), e.g. 1 2 4 8 16."}
    )
    method: list[str] = field(
        default_factory=lambda: ["zeroshot", "linear-probe", "coop"],
        metadata={
            "help": f"Methods, any of {', '.join(METHOD_NAMES)} (zeroshot runs once per dataset); a prompt method "
            "may be listed as variants with their own prompt settings, <method>:<setting>=<value>[,...] (e.g. coop "
            "coop:class_token_position=middle coop:class_specific_context=true)."
        },
    )

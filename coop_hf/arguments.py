"""Command-line arguments shared by the example scripts (parsed with `transformers.HfArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .losses import DEFAULT_GCE_Q
from .noise import NoiseSpec

METHODS = ("coop", "zeroshot", "linear-probe")


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
    method: str = field(default="coop", metadata={"help": f"One of {', '.join(METHODS)}."})
    n_ctx: int | None = field(
        default=None, metadata={"help": "Context vectors M; default 16, or the BPE token count of --ctx_init."}
    )
    ctx_init: str | None = field(default=None, metadata={"help": "Initialisation phrase, e.g. 'a photo of a'."})
    class_token_position: str = field(default="end", metadata={"help": "end | middle | front."})
    class_specific_context: bool = field(default=False, metadata={"help": "One context per class (CSC)."})
    allow_fewer_shots: bool = field(
        default=False, metadata={"help": "Take all images of a class that has fewer than --shots."}
    )
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Where image features are cached (default: the datasets cache)."}
    )
    loss: str = field(default="ce", metadata={"help": "ce (cross-entropy) or gce (generalised cross-entropy)."})
    gce_q: float = field(default=DEFAULT_GCE_Q, metadata={"help": "q of the generalised cross-entropy, in (0, 1]."})
    noise_type: str = field(default="none", metadata={"help": "Label noise: none | symmetric | replace | confusion."})
    noise_rate: float = field(default=0.0, metadata={"help": "Fraction of noisy shots per class, in [0, 1)."})
    noise_val: bool = field(
        default=False,
        metadata={"help": "Also corrupt the few-shot validation split (default: it stays clean, as in PTNL)."},
    )

    def noise(self) -> NoiseSpec:
        """The label noise these flags ask for."""
        return NoiseSpec(self.noise_type, self.noise_rate, val=self.noise_val)

    def model_kwargs(self) -> dict:
        """The prompt settings, as `CoOpModel.from_clip` takes them."""
        return dict(
            n_ctx=self.n_ctx,
            ctx_init=self.ctx_init,
            class_token_position=self.class_token_position,
            class_specific_context=self.class_specific_context,
        )


@dataclass
class NoiseStudyArguments:
    """The label-noise sweep of `examples/train_noisy.py`."""

    noise_rates: list[float] = field(
        default_factory=lambda: [0.0, 0.125, 0.25, 0.5], metadata={"help": "Noise rates to sweep, e.g. 0 0.25 0.5."}
    )
    study_noise_type: str = field(
        default="replace", metadata={"help": "Scheme of the sweep: replace (the PTNL study) | symmetric | confusion."}
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

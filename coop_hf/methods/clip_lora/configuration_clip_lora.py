"""Configuration of CLIP-LoRA: low-rank updates of the attention projections of both towers, through `peft`."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PromptConfig
from ...data.templates import DEFAULT_TEMPLATE

LORA_PARAMS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
LORA_ENCODERS = ("text", "vision", "both")
LORA_POSITIONS = ("bottom", "mid", "up", "half-bottom", "half-up", "top3", "all")


def layers_at(position: str, depth: int) -> list[int]:
    """The layers of a `depth`-layer tower at `position`: the official thirds ("bottom", "mid", "up"), halves
    ("half-bottom", "half-up"), the last three ("top3") or "all" (on 12 layers: the reference's index lists)."""
    third, half = depth // 3, depth // 2
    spans = {
        "bottom": range(0, third), "mid": range(third, 2 * third), "up": range(2 * third, depth),
        "half-bottom": range(0, half), "half-up": range(half, depth), "top3": range(max(depth - 3, 0), depth),
        "all": range(depth),
    }  # fmt: skip
    return list(spans[position])


@strict
class CLIPLoRAConfig(PromptConfig):
    r"""Configuration of a [`CLIPLoRAModel`] (Zanella and Ben Ayed, "Low-Rank Few-Shot Adaptation of
    Vision-Language Models", CVPRW 2024).

    Args:
        base_model_name_or_path (`str`):
            Hub id or local path of the frozen backbone the LoRA updates apply to.
        classnames (`list[str]`):
            The class names in label order. They are also the labels (`id2label`) that pipelines report.
        lora_rank (`int`, defaults to 2):
            Rank r of each low-rank update B A.
        lora_alpha (`float`, defaults to 1.0):
            Scale of the updates: W + alpha / sqrt(r) * B A (the reference's scaling, peft's rsLoRA).
        lora_dropout (`float`, defaults to 0.25):
            Dropout on each LoRA branch's input during training.
        lora_params (`list[str]`, defaults to ["q", "k", "v"]):
            Attention projections that get an update: any of q, k, v, o (the output projection).
        lora_encoder (`str`, defaults to "both"):
            Towers with updates: text, vision or both.
        lora_position (`str`, defaults to "all"):
            Layers with updates: bottom, mid, up (thirds of the tower), half-bottom, half-up, top3 or all.
        template (`str`, defaults to "a photo of a {}."):
            The class prompt, with `{}` for the class name (the reference's, on every dataset).
    """

    model_type = "clip_lora"

    lora_rank: int = 2
    lora_alpha: float = 1.0
    lora_dropout: float = 0.25
    lora_params: list[str] | None = None
    lora_encoder: str = "both"
    lora_position: str = "all"
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self, **kwargs):
        self.lora_params = list(self.lora_params or ["q", "k", "v"])
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"lora_rank (--lora_rank) must be a whole number >= 1, got {self.lora_rank!r}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout (--lora_dropout) must be in [0, 1), got {self.lora_dropout!r}.")
        unknown = [name for name in self.lora_params if name not in LORA_PARAMS]
        if unknown or not self.lora_params or len(set(self.lora_params)) != len(self.lora_params):
            raise ValueError(
                f"lora_params (--lora_params) takes distinct projections among {', '.join(LORA_PARAMS)}, got "
                f"{self.lora_params!r}."
            )
        for name, value, choices in (
            ("lora_encoder", self.lora_encoder, LORA_ENCODERS),
            ("lora_position", self.lora_position, LORA_POSITIONS),
        ):
            if value not in choices:
                raise ValueError(f"{name} (--{name}) is one of {', '.join(choices)}, got {value!r}.")
        if self.template.count("{}") != 1:
            raise ValueError(f"template (--template) must hold the class name once, as '{{}}': {self.template!r}.")

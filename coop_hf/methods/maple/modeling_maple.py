"""MaPLe: multi-modal prompt learning (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

A deep-prompt model (`coop_hf.methods.deep_prompts.DeepPromptModel`: how the prompts go into both towers) whose vision
prompts are made from the language prompts by linear coupling functions: `proj(ctx)` for the first image layer,
one coupling per deeper layer of that layer's language prompts. Both towers get prompts in the same first J layers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..deep_prompts import DeepPromptModel
from .configuration_maple import MaPLeConfig

MAPLE_PAPER = (
    "Khattak et al., MaPLe: Multi-modal Prompt Learning, CVPR 2023",
    "https://arxiv.org/abs/2210.03117",
    """@inproceedings{khattak2023maple,
  title     = {MaPLe: Multi-modal Prompt Learning},
  author    = {Khattak, Muhammad Uzair and Rasheed, Hanoona and Maaz, Muhammad and Khan, Salman and
               Khan, Fahad Shahbaz},
  booktitle = {The IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2023}
}""",
)


class MaPLeModel(DeepPromptModel):
    """A frozen backbone with coupled language and vision prompts in its first `prompt_depth` layers.

    Trained and saved: the language context `prompt_learner.ctx` [n_ctx, text width], the coupling `proj`
    (text width -> vision width), the deeper language prompts `compound_prompts_text` (J - 1 of [n_ctx, text width])
    and their couplings `compound_prompt_projections` (J - 1 linear layers).

    Example:

    ```python
    >>> from coop_hf import MaPLeModel

    >>> model = MaPLeModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # n_ctx 2, depth 9
    >>> logits = model(pixel_values=pixel_values).logits  # both towers prompted
    ```
    """

    config: MaPLeConfig
    config_class = MaPLeConfig
    method_name = "MaPLe"
    paper = MAPLE_PAPER

    def __init__(
        self,
        config: MaPLeConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)  # the language context: drawn first
        backbone = self.backbone
        text_width, vision_width = backbone.text_width, backbone.vision_width
        # In the reference's order of random draws: the coupling, the deeper prompts, then one coupling layer
        # that every deeper layer starts from.
        self.proj = nn.Linear(text_width, vision_width)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.randn(config.n_ctx, text_width) * 0.02) for _ in range(config.prompt_depth - 1)]
        )
        coupling = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(coupling) for _ in range(config.prompt_depth - 1)]
        )
        self.to(backbone.device)
        self.post_init()

    @classmethod
    def prompt_depths(cls, config: MaPLeConfig) -> tuple[int, int]:
        return config.prompt_depth, config.prompt_depth

    @classmethod
    def depth_flags(cls, config: MaPLeConfig) -> dict[str, int]:
        return {"prompt_depth": config.prompt_depth}

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.compound_prompts_text)

    def layer_vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first layer's vision prompts `proj(ctx)` and each deeper layer's coupling of its language prompts."""
        deeper = [
            coupling(prompts)
            for coupling, prompts in zip(self.compound_prompt_projections, self.compound_prompts_text, strict=True)
        ]
        return self.proj(self.prompt_learner.ctx), deeper

    # -- what is saved ---------------------------------------------------------------------------------------------

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            ("prompt tokens per layer (`n_ctx`)", str(config.n_ctx)),
            ("prompted layers per tower (`prompt_depth`)", str(config.prompt_depth)),
            ("text prompt (`ctx_init`)", self.phrase_setting()),
            ("vision prompts", "linear couplings of the language prompts, one per prompted layer"),
        ]

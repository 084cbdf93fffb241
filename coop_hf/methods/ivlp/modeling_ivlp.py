"""IVLP (independent vision-language prompts, PromptSRC's base model): a deep-prompt model
(`coop_hf.methods.deep_prompts.DeepPromptModel`) whose every prompted layer has its own language and vision tokens,
trained with cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..deep_prompts import DeepPromptModel
from .configuration_ivlp import IVLPConfig

PROMPTSRC_PAPER = (
    "Khattak et al., Self-regulating Prompts: Foundational Model Adaptation without Forgetting, ICCV 2023",
    "https://arxiv.org/abs/2307.06948",
    """@inproceedings{khattak2023self,
  title     = {Self-regulating Prompts: Foundational Model Adaptation without Forgetting},
  author    = {Khattak, Muhammad Uzair and Wasim, Syed Talal and Naseer, Muzammal and Khan, Salman and Yang,
               Ming-Hsuan and Khan, Fahad Shahbaz},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision},
  year      = {2023}
}""",
)


class IVLPModel(DeepPromptModel):
    """Independent vision-language prompts: each prompted layer of each tower has its own learned tokens.

    Trained and saved: the language context `prompt_learner.ctx` [n_ctx, text width], the deeper language prompts
    `text_prompts` (J - 1 of [n_ctx, text width]) and the vision prompts `vision_prompts` (J' of [n_ctx_vision,
    vision width], the first appended to the image tokens).

    Example:

    ```python
    >>> from coop_hf import IVLPModel

    >>> model = IVLPModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # 4 + 4 tokens, depth 9 / 9
    >>> logits = model(pixel_values=pixel_values).logits
    ```
    """

    config: IVLPConfig
    config_class = IVLPConfig
    method_name = "IVLP"
    paper = PROMPTSRC_PAPER

    def __init__(
        self,
        config: IVLPConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        text_width, vision_width = self.backbone.text_width, self.backbone.vision_width
        self.text_prompts = nn.ParameterList(
            [nn.Parameter(torch.randn(config.n_ctx, text_width) * 0.02) for _ in range(config.prompt_depth_text - 1)]
        )
        self.vision_prompts = nn.ParameterList(
            [
                nn.Parameter(torch.randn(config.n_ctx_vision, vision_width) * 0.02)
                for _ in range(config.prompt_depth_vision)
            ]
        )
        self.to(self.backbone.device)
        self.post_init()

    @classmethod
    def prompt_depths(cls, config: IVLPConfig) -> tuple[int, int]:
        return config.prompt_depth_text, config.prompt_depth_vision

    @classmethod
    def depth_flags(cls, config: IVLPConfig) -> dict[str, int]:
        return {"prompt_depth_text": config.prompt_depth_text, "prompt_depth_vision": config.prompt_depth_vision}

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.text_prompts)

    def layer_vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        if not len(self.vision_prompts):
            return None
        return self.vision_prompts[0], list(self.vision_prompts[1:])

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            ("language tokens per layer (`n_ctx`)", str(config.n_ctx)),
            ("vision tokens per layer (`n_ctx_vision`)", str(config.n_ctx_vision)),
            ("prompted text / image layers", f"{config.prompt_depth_text} / {config.prompt_depth_vision}"),
            ("text prompt (`ctx_init`)", self.phrase_setting()),
        ]

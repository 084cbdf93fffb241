"""CLIP-Adapter: the frozen backbone's image features blended with a bottleneck MLP's output, classified against
the frozen text features of a hand-written template (Gao et al., IJCV 2023; gaopengcuhk/CLIP-Adapter)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel
from .configuration_clip_adapter import CLIPAdapterConfig

CLIP_ADAPTER_PAPER = (
    "Gao et al., CLIP-Adapter: Better Vision-Language Models with Feature Adapters, IJCV 2023",
    "https://arxiv.org/abs/2110.04544",
    """@article{gao2024clip,
  title   = {CLIP-Adapter: Better Vision-Language Models with Feature Adapters},
  author  = {Gao, Peng and Geng, Shijie and Zhang, Renrui and Ma, Teli and Fang, Rongyao and Zhang, Yongfeng and
             Li, Hongsheng and Qiao, Yu},
  journal = {International Journal of Computer Vision},
  year    = {2024}
}""",
)


class CLIPAdapterModel(PromptPreTrainedModel):
    """A frozen contrastive model whose image features pass a residual bottleneck adapter:
    f' = ratio * relu(W2 relu(W1 f)) + (1 - ratio) * f, classified by the scaled cosine with the template's frozen
    text features. The image tower itself is untouched, so cached image features serve training and evaluation.

    Trained and saved: `adapter` (two bias-free linear layers, dim -> dim / reduction -> dim).

    Example:

    ```python
    >>> from coop_hf import CLIPAdapterModel

    >>> model = CLIPAdapterModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # reduction 4, ratio 0.2
    >>> logits = model(image_embeds=image_embeds).logits
    ```
    """

    config: CLIPAdapterConfig
    config_class = CLIPAdapterConfig
    method_name = "CLIP-Adapter"
    paper = CLIP_ADAPTER_PAPER
    transfers_to_new_classes = True

    def __init__(
        self,
        config: CLIPAdapterConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        dim = self.backbone.embed_dim
        hidden = dim // config.reduction
        self.adapter = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU()
        )
        self.to(self.backbone.device)
        self._set_text_embeds()
        self.post_init()

    def _set_text_embeds(self) -> None:
        embeds = zero_shot_weights(self.clip, self.tokenizer, self.classnames, [self.config.template])
        self.register_buffer("text_embeds", embeds.float(), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: the template's text features follow it; the adapter applies to any."""
        self.config.set_classnames(classnames)
        self._set_text_embeds()

    def adapted_image_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """ratio * adapter(f) + (1 - ratio) * f."""
        ratio = self.config.residual_ratio
        features = image_features.float()
        return ratio * self.adapter(features) + (1 - ratio) * features

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Class logits of images (`pixel_values`, or the backbone's `image_embeds`); with `labels`, the
        cross-entropy."""
        image = F.normalize(
            self.adapted_image_features(
                self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes)
            ),
            dim=-1,
        )
        logits = self.backbone.logits(image, self.text_embeds)
        return self.classification_output(
            logits, labels, return_dict, image_embeds=image, text_embeds=self.text_embeds
        )

    def describe_prompt(self) -> str:
        return f"image features of {self.backbone.embed_dim} dims, reduction {self.config.reduction}"

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            ("bottleneck (`reduction`)", f"{self.backbone.embed_dim} -> "
             f"{self.backbone.embed_dim // config.reduction} -> {self.backbone.embed_dim}"),
            ("residual ratio (`residual_ratio`)", f"{config.residual_ratio:g}"),
            ("class prompt (`template`)", f'"{config.template}"'),
        ]  # fmt: skip

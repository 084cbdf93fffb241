"""PTNL's linear classifiers (Wu et al., "Why Is Prompt Tuning for Vision-Language Models Robust to Noisy Labels?",
ICCV 2023): a linear head on frozen, L2-normalised CLIP image features, trained by the CoOp recipe.

Classifier-R starts from `nn.Linear`'s default initialisation and gives logits W f + b. Classifier-C starts from the
normalised text features of the hand-crafted prompt (zero-shot CLIP's class weights) with b = 0 and multiplies by
CLIP's (frozen) logit scale, exp(s) (W f + b), so before training it is zero-shot CLIP. The PTNL code release holds
no classifier code; these are coop-hf's choices.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel
from ..papers import PTNL_PAPER
from .configuration_classifier import ClassifierConfig


class LinearClassifierModel(PromptPreTrainedModel):
    """A linear head on a frozen CLIP's normalised image features; only `classifier.weight` and `classifier.bias`
    train and are saved.

    Example:

    ```python
    >>> from coop_hf import LinearClassifierModel

    >>> model = LinearClassifierModel.from_clip(clip, ["daisy", "rose"], init="text", template="a photo of a {}.")
    >>> logits = model(pixel_values=pixel_values).logits  # untrained: zero-shot CLIP's logits
    ```
    """

    config: ClassifierConfig
    config_class = ClassifierConfig
    method_name = "Linear classifier"
    paper = PTNL_PAPER

    def __init__(
        self,
        config: ClassifierConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self.classifier = nn.Linear(self.backbone.embed_dim, len(config.classnames))
        if config.init == "text":
            with torch.no_grad():
                weights = zero_shot_weights(clip, tokenizer, self.classnames, [config.template])
                self.classifier.weight.copy_(weights)
                self.classifier.bias.zero_()
        self.classifier.to(self.backbone.device)
        self.post_init()

    @property
    def method_label(self) -> str:
        return "Classifier-C" if self.config.init == "text" else "Classifier-R"

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Class logits of images: `pixel_values` [batch, 3, H, W], or precomputed CLIP `image_embeds`
        [batch, projection_dim]. With `labels` [batch], also the cross-entropy loss."""
        image_embeds = F.normalize(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes), dim=-1
        )
        logits = self.classifier(image_embeds.to(self.classifier.weight.dtype))
        if self.config.init == "text":
            logits = self.backbone.scale_similarities(logits)
        loss_function = functools.partial(self.compute_loss, text_embeds=None)
        return self.classification_output(logits, labels, return_dict, loss_function, image_embeds=image_embeds)

    def describe_prompt(self) -> str:
        return f"{len(self.config.classnames)} classes, feature width {self.backbone.embed_dim}"

    def card_settings(self) -> list[tuple[str, str]]:
        if self.config.init == "text":
            start = f'text features of "{self.config.template}", bias 0, scaled by CLIP\'s logit scale'
        else:
            start = "random (`nn.Linear` default)"
        return [("classifier", self.method_label), ("initialisation (`init`)", start)]

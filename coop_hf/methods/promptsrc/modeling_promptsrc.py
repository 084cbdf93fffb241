"""PromptSRC: IVLP's deep prompts regulated towards the frozen model (Khattak et al., ICCV 2023).

The training loss of a batch, as the reference's `PromptSRC.forward_backward` computes it:

    cross-entropy(logits, labels)
    + text_loss_weight  * mean |t - t_frozen|             (L1 over classes x dims; t normalised text features)
    + image_loss_weight * mean |v - v_frozen|             (L1 over batch x dims; v normalised image features)
    + sum KL(softmax(z_frozen) || softmax(z)) / numel(z)  (z the prompted logits)

with `t_frozen` the frozen backbone's raw text features averaged over the 60 ImageNet templates (textual diversity)
then normalised, `v_frozen` the frozen image tower's normalised features of the same images, and `z_frozen` their
logits. The Gaussian aggregation of each epoch's prompts that training ends with is the trainer's
([`PromptSRCTrainer`]).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...data.templates import IMAGENET_TEMPLATES
from ...modeling_utils import PromptModelOutput
from ..ivlp.modeling_ivlp import IVLPModel
from .configuration_promptsrc import PromptSRCConfig


class PromptSRCModel(IVLPModel):
    """Independent vision-language prompts trained with PromptSRC's self-regulating losses (see the module
    docstring); at inference an IVLP prompt.

    The frozen text features of the class list (`frozen_text_embeds`) are computed on the first training batch (60
    templates per class) and again after `set_classnames`; they are never saved. Trained and saved: IVLP's tensors.

    Example:

    ```python
    >>> from coop_hf import PromptSRCModel

    >>> model = PromptSRCModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # 4 + 4 tokens, 9 / 9
    >>> output = model(pixel_values=pixel_values, labels=labels)
    >>> output.loss  # cross-entropy + 25 x L1(text) + 10 x L1(image) + KL towards the frozen model's logits
    ```
    """

    config: PromptSRCConfig
    config_class = PromptSRCConfig
    method_name = "PromptSRC"
    has_own_loss = True

    def __init__(
        self,
        config: PromptSRCConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self._frozen_text_embeds: torch.Tensor | None = None

    def set_classnames(self, classnames: list[str]) -> None:
        super().set_classnames(classnames)
        self._frozen_text_embeds = None

    def frozen_text_embeds(self) -> torch.Tensor:
        """[classes, projection_dim] the frozen backbone's text features averaged over the ImageNet templates (raw
        features averaged, then normalised, as the reference's `fixed_embeddings`)."""
        if self._frozen_text_embeds is None:
            weights = zero_shot_weights(
                self.clip, self.tokenizer, self.classnames, list(IMAGENET_TEMPLATES), normalize_each=False
            )
            self._frozen_text_embeds = weights.float()
        return self._frozen_text_embeds

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> PromptModelOutput | tuple:
        """IVLP's logits; with `labels`, PromptSRC's loss (`loss_terms` summed)."""
        output = super().forward(pixel_values=pixel_values, image_embeds=image_embeds)
        if labels is not None:
            self.check_labels(labels, output.logits.shape[-1])
            loss = sum(self.loss_terms(pixel_values, labels, output).values())
            output = PromptModelOutput(loss=loss, **output)
        return output if return_dict is not False else output.to_tuple()

    def loss_terms(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, output: PromptModelOutput
    ) -> dict[str, torch.Tensor]:
        """The weighted terms of PromptSRC's loss for a batch: "ce", "text_l1", "image_l1" and "kl"."""
        config = self.config
        logits = output.logits.float()
        frozen_text = self.frozen_text_embeds().to(logits.device)
        with torch.no_grad():
            frozen_image = F.normalize(self.backbone.image_features(pixel_values).float(), dim=-1)
            frozen_logits = self.backbone.logits(frozen_image, frozen_text).float()
        kl = F.kl_div(
            F.log_softmax(logits, dim=-1), F.log_softmax(frozen_logits, dim=-1), reduction="sum", log_target=True
        )
        return {
            "ce": self.compute_loss(logits, labels, output.text_embeds),
            "text_l1": config.text_loss_weight * F.l1_loss(output.text_embeds.float(), frozen_text),
            "image_l1": config.image_loss_weight * F.l1_loss(output.image_embeds.float(), frozen_image),
            "kl": kl / logits.numel(),
        }

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            *super().card_settings(),
            ("L1 weights text / image", f"{config.text_loss_weight:g} / {config.image_loss_weight:g}"),
            ("prompt aggregation over epochs", f"Gaussian, mean {config.gpa_mean:g}, std {config.gpa_std:g}"),
        ]

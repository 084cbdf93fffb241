"""LP++: a linear probe on frozen image features plus class-wise multiples of the text logits (Huang et al., CVPR
2024; FereshteShakeri/FewShot-CLIP-Strong-Baseline)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel, rows_among
from .configuration_lp_plus_plus import LPPlusPlusConfig

LP_PLUS_PLUS_PAPER = (
    "Huang et al., LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP, CVPR 2024",
    "https://arxiv.org/abs/2404.02285",
    """@inproceedings{huang2024lp++,
  title     = {LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP},
  author    = {Huang, Yunshi and Shakeri, Fereshteh and Dolz, Jose and Boudiaf, Malik and Bahig, Houda and
               Ben Ayed, Ismail},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}""",
)


class LPPlusPlusModel(PromptPreTrainedModel):
    """logits_k = w_k . f + b_k + alpha_k (f . t_k) for the normalised image features f and the normalised text
    embeddings t_k of the class prompts (unscaled cosines, as the reference).

    The fitted tensors follow the class list by name: a class that was not fitted gets w = 0, b = 0 and the mean
    alpha, so on classes without training images (base-to-new's new classes) the model ranks as zero-shot CLIP.

    Saved: `weight` [fitted classes, dim], `bias` and `alpha` [fitted classes]. A model never fitted is zero-shot
    CLIP.

    Example:

    ```python
    >>> from coop_hf import LPPlusPlusModel

    >>> model = LPPlusPlusModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])
    >>> model.set_fitted(weight, bias, alpha)  # e.g. from LPPlusPlusTrainer
    >>> logits = model(image_embeds=image_embeds).logits
    ```
    """

    config: LPPlusPlusConfig
    config_class = LPPlusPlusConfig
    method_name = "LP++"
    paper = LP_PLUS_PLUS_PAPER
    transfers_to_new_classes = True
    unfitted_classes_zero_shot = True

    def __init__(
        self,
        config: LPPlusPlusConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self._resize(len(config.fitted_classnames or []))
        self.to(self.backbone.device)
        self._set_text_embeds()
        self.post_init()

    def _resize(self, classes: int) -> None:
        dim, device = self.backbone.embed_dim, self.backbone.device
        self.weight = nn.Parameter(torch.zeros(classes, dim, device=device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(classes, device=device), requires_grad=False)
        self.alpha = nn.Parameter(torch.zeros(classes, device=device), requires_grad=False)

    def _set_text_embeds(self) -> None:
        """The class prompts' text embeddings (the text tower over every class), then `_set_fitted_rows`."""
        embeds = zero_shot_weights(self.clip, self.tokenizer, self.classnames, self.config.templates)
        self.register_buffer("text_embeds", embeds.float(), persistent=False)
        self._set_fitted_rows()

    def _set_fitted_rows(self) -> None:
        """The row of each current class among the fitted ones (-1 for a class not fitted)."""
        rows = rows_among(self.classnames, self.config.fitted_classnames)
        self.register_buffer("fitted_rows", rows.to(self.weight.device), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: the text embeddings follow it; fitted classes keep their tensors."""
        self.config.set_classnames(classnames)
        self._set_text_embeds()

    def set_fitted(self, weight: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor) -> None:
        """Set the fitted tensors of the current class list (which becomes the fitted one)."""
        self.config.fitted_classnames = self.classnames
        self._resize(len(weight))
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)
            self.alpha.copy_(alpha)
        self._set_fitted_rows()

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """The saved tensors, sized to the saved number of fitted classes first."""
        if "weight" in state_dict:
            self._resize(len(state_dict["weight"]))
        super().load_prompt(state_dict, source)
        self._set_fitted_rows()

    def class_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight [classes, dim], bias, alpha) of the current class list: the fitted rows by name, else w = 0,
        b = 0 and the mean alpha (1 when nothing was fitted)."""
        if not len(self.weight):
            classes = len(self.classnames)
            zeros = torch.zeros(classes, device=self.text_embeds.device)
            return torch.zeros_like(self.text_embeds), zeros, zeros + 1
        rows, fitted = self.fitted_rows.clamp(min=0), (self.fitted_rows >= 0)
        weight = self.weight[rows] * fitted[:, None]
        bias = self.bias[rows] * fitted
        alpha = torch.where(fitted, self.alpha[rows], self.alpha.mean())
        return weight, bias, alpha

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
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes).float(), dim=-1
        )
        weight, bias, alpha = self.class_tensors()
        logits = F.linear(image, weight, bias) + alpha * (image @ self.text_embeds.T)
        return self.classification_output(
            logits, labels, return_dict, image_embeds=image, text_embeds=self.text_embeds
        )

    def describe_prompt(self) -> str:
        return f"{len(self.weight)} fitted classes of {self.backbone.embed_dim} dims"

    def card_settings(self) -> list[tuple[str, str]]:
        alpha = self.alpha
        blend = f"mean {alpha.mean().item():.4g} (min {alpha.min().item():.4g}, max {alpha.max().item():.4g})"
        return [
            ("fitted classes", str(len(self.weight))),
            ("text multipliers alpha", blend if len(alpha) else "none fitted"),
            ("class prompts (`templates`)", ", ".join(f'"{template}"' for template in self.config.templates)),
        ]

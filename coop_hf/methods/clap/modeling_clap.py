"""CLAP and ZS-LP: a linear probe of class prototypes initialised from the zero-shot text embeddings, on normalised
features at the backbone's temperature (Silva-Rodríguez et al., CVPR 2024; jusiro/CLAP)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...backbones import Backbone
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel, rows_among
from .configuration_clap import CLAPConfig

CLAP_PAPER = (
    "Silva-Rodríguez et al., A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models, CVPR 2024",
    "https://arxiv.org/abs/2312.12730",
    """@inproceedings{silva2024clap,
  title     = {A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models},
  author    = {Silva-Rodr{\\'\\i}guez, Julio and Hajimiri, Sina and Ben Ayed, Ismail and Dolz, Jose},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {23681--23690},
  year      = {2024}
}""",
)


@torch.no_grad()
def zero_shot_prototypes(
    backbone: Backbone, tokenizer: PreTrainedTokenizerBase, classnames: list[str], templates: list[str]
) -> torch.Tensor:
    """[classes, dim] raw text features of each class's prompts averaged over the templates, not normalised (the
    official `_get_base_text_features`): the prototypes' initialisation and the centre of CLAP's penalty."""
    per_template = []
    for template in templates:
        texts = [template.format(name) for name in classnames]
        features = []
        for start in range(0, len(texts), 256):
            inputs = backbone.tokenize(tokenizer, texts[start : start + 256])
            features.append(backbone.text_features({key: value.to(backbone.device) for key, value in inputs.items()}))
        per_template.append(torch.cat(features).float())
    return torch.stack(per_template).mean(dim=0)


def normalize_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm, as the reference writes it (no epsilon)."""
    return tensor / tensor.norm(dim=-1, keepdim=True)


class CLAPModel(PromptPreTrainedModel):
    """logits = the backbone's scale x cos(f, p_k) (plus SigLIP's bias) for the image features f and the class
    prototypes p_k, which start as the zero-shot prototypes (the raw text features of the class prompts, averaged
    over the templates) and are fitted on the training views: by ZS-LP with cross-entropy alone, by CLAP with each
    class's squared distance to its zero-shot prototype added, weighted by its multiplier.

    The fitted prototypes follow the class list by name: a class that was not fitted keeps its zero-shot prototype,
    so on classes without training images (base-to-new's new classes) the model is zero-shot CLIP with the
    reference's prompts.

    Saved: `prototypes` [fitted classes, dim] and `multipliers` [fitted classes] (CLAP's penalty weights at the end
    of the fit; zeros for ZS-LP). A model never fitted is zero-shot CLIP.

    Example:

    ```python
    >>> from coop_hf import CLAPModel

    >>> model = CLAPModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])
    >>> model.set_fitted(prototypes, multipliers)  # e.g. from CLAPTrainer
    >>> logits = model(image_embeds=image_embeds).logits
    ```
    """

    config: CLAPConfig
    config_class = CLAPConfig
    method_name = "CLAP"
    paper = CLAP_PAPER
    transfers_to_new_classes = True
    unfitted_classes_zero_shot = True

    def __init__(
        self,
        config: CLAPConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        if not config.zero_shot_constraint:
            self.method_name = "ZS-LP"
        self._resize(len(config.fitted_classnames or []))
        self.to(self.backbone.device)
        self._set_text_embeds()
        self.post_init()

    def _resize(self, classes: int) -> None:
        device = self.backbone.device
        self.prototypes = nn.Parameter(
            torch.zeros(classes, self.backbone.embed_dim, device=device), requires_grad=False
        )
        self.multipliers = nn.Parameter(torch.zeros(classes, device=device), requires_grad=False)

    def _set_text_embeds(self) -> None:
        """The zero-shot prototypes of the current class list, then `_set_fitted_rows`."""
        embeds = zero_shot_prototypes(self.backbone, self.tokenizer, self.classnames, self.config.templates)
        self.register_buffer("zero_shot", embeds, persistent=False)
        self._set_fitted_rows()

    def _set_fitted_rows(self) -> None:
        """The row of each current class among the fitted ones (-1 for a class not fitted)."""
        rows = rows_among(self.classnames, self.config.fitted_classnames)
        self.register_buffer("fitted_rows", rows.to(self.prototypes.device), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: the zero-shot prototypes follow it; fitted classes keep their prototypes."""
        self.config.set_classnames(classnames)
        self._set_text_embeds()

    def set_fitted(self, prototypes: torch.Tensor, multipliers: torch.Tensor) -> None:
        """Set the fitted prototypes and multipliers of the current class list (which becomes the fitted one)."""
        self.config.fitted_classnames = self.classnames
        self._resize(len(prototypes))
        with torch.no_grad():
            self.prototypes.copy_(prototypes)
            self.multipliers.copy_(multipliers)
        self._set_fitted_rows()

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """The saved tensors, sized to the saved number of fitted classes first."""
        if "prototypes" in state_dict:
            self._resize(len(state_dict["prototypes"]))
        super().load_prompt(state_dict, source)
        self._set_fitted_rows()

    def class_prototypes(self) -> torch.Tensor:
        """[classes, dim] unnormalised prototypes of the current class list: the fitted row by name, else the
        zero-shot prototype."""
        if not len(self.prototypes):
            return self.zero_shot
        fitted = (self.fitted_rows >= 0)[:, None]
        return torch.where(fitted, self.prototypes[self.fitted_rows.clamp(min=0)], self.zero_shot)

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
        image = normalize_rows(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes).float()
        )
        prototypes = normalize_rows(self.class_prototypes())
        logits = self.backbone.logits(image, prototypes)
        return self.classification_output(logits, labels, return_dict, image_embeds=image, text_embeds=prototypes)

    def describe_prompt(self) -> str:
        return f"{len(self.prototypes)} fitted classes of {self.backbone.embed_dim} dims"

    def card_settings(self) -> list[tuple[str, str]]:
        config, multipliers = self.config, self.multipliers
        if not config.zero_shot_constraint:
            penalty = "none (ZS-LP)"
        elif not len(multipliers):
            penalty = "none fitted"
        else:
            low, mean, high = (value.item() for value in (multipliers.min(), multipliers.mean(), multipliers.max()))
            update = "updated every epoch (augmented Lagrangian)" if config.adaptive_multipliers else "fixed"
            penalty = (
                f"squared L2 distance to the zero-shot prototypes, class multipliers mean {mean:.4g} (min {low:.4g}, "
                f"max {high:.4g}), {update}"
            )
        return [
            ("fitted classes", str(len(self.prototypes))),
            ("penalty", penalty),
            ("augmented views per image (`augment_views`)", str(config.augment_views)),
            ("class prompts (`templates`)", ", ".join(f'"{template}"' for template in config.templates)),
        ]

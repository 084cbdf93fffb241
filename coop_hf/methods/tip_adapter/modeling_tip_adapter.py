"""Tip-Adapter and Tip-Adapter-F: zero-shot CLIP plus a key-value cache of the few-shot images' features (Zhang et
al., ECCV 2022; gaopengcuhk/Tip-Adapter)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel, rows_among
from .configuration_tip_adapter import TipAdapterConfig

TIP_ADAPTER_PAPER = (
    "Zhang et al., Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification, ECCV 2022",
    "https://arxiv.org/abs/2207.09519",
    """@inproceedings{zhang2022tip,
  title     = {Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification},
  author    = {Zhang, Renrui and Zhang, Wei and Fang, Rongyao and Gao, Peng and Li, Kunchang and Dai, Jifeng and
               Qiao, Yu and Li, Hongsheng},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2022}
}""",
)


class TipAdapterModel(PromptPreTrainedModel):
    """Zero-shot CLIP plus a cache model: logits = CLIP's logits + alpha * exp(-beta (1 - f K^T)) V, where the keys
    K are the L2-normalised features of the few-shot training images (each the mean of `augment_views` augmented
    views) and the values V their one-hot labels; alpha and beta are searched on the validation split.
    Tip-Adapter-F (`fine_tune`) also fine-tunes the keys.

    The values follow the class list by name: on a class without cache entries (base-to-new's new classes, another
    dataset) the cache adds nothing and the model is zero-shot CLIP.

    Saved: `cache_keys` [entries, dim], `cache_labels` [entries] (indices into `config.fitted_classnames`), the
    searched `alpha` and `beta`. A model that was never fitted has an empty cache: it is zero-shot CLIP.

    Example:

    ```python
    >>> from coop_hf import TipAdapterModel

    >>> model = TipAdapterModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])
    >>> model.set_cache(keys, labels)  # normalised [entries, dim] features and their class indices
    >>> logits = model(image_embeds=image_embeds).logits
    ```
    """

    config: TipAdapterConfig
    config_class = TipAdapterConfig
    method_name = "Tip-Adapter"
    paper = TIP_ADAPTER_PAPER
    transfers_to_new_classes = True
    unfitted_classes_zero_shot = True
    saved_buffers = ("cache_labels",)

    def __init__(
        self,
        config: TipAdapterConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        if config.fine_tune:
            self.method_name = "Tip-Adapter-F"
        self.cache_keys = nn.Parameter(torch.zeros(0, self.backbone.embed_dim), requires_grad=False)
        self.register_buffer("cache_labels", torch.zeros(0, dtype=torch.long))
        self.alpha = nn.Parameter(torch.tensor(float(config.init_alpha)), requires_grad=False)
        self.beta = nn.Parameter(torch.tensor(float(config.init_beta)), requires_grad=False)
        self.to(self.backbone.device)
        self._set_text_embeds()
        self.post_init()

    def _set_text_embeds(self) -> None:
        embeds = zero_shot_weights(self.clip, self.tokenizer, self.classnames, self.config.templates)
        self.register_buffer("text_embeds", embeds.float(), persistent=False)
        self._set_cache_columns()

    def _set_cache_columns(self) -> None:
        """The class column of every cache entry in the current class list (-1 for a class not in it)."""
        columns = rows_among(self.config.fitted_classnames or [], self.classnames)
        entry_columns = columns[self.cache_labels.cpu()] if len(self.cache_labels) else self.cache_labels.cpu()
        self.register_buffer("cache_columns", entry_columns.to(self.cache_keys.device), persistent=False)

    @property
    def cache_values(self) -> torch.Tensor:
        """The reference's cache values: the entries' one-hot labels over the current class list [entries,
        classes] (all zero for an entry of a class not in it)."""
        values = torch.zeros(len(self.cache_columns), len(self.classnames), device=self.cache_keys.device)
        kept = (self.cache_columns >= 0).nonzero().squeeze(1)
        values[kept, self.cache_columns[kept]] = 1.0
        return values

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: the zero-shot weights follow it, and the cache keeps the entries of the
        classes it shares with the fitted ones (none: zero-shot CLIP)."""
        self.config.set_classnames(classnames)
        self._set_text_embeds()

    def set_cache(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the cache: `keys` [entries, dim] (normalised features), `labels` [entries] indices into the current
        class list, which becomes the fitted one; alpha and beta go back to their initial values."""
        self.config.fitted_classnames = self.classnames
        self._resize_cache(len(keys))
        with torch.no_grad():
            self.cache_keys.copy_(keys)
            self.cache_labels.copy_(labels)
            self.alpha.fill_(self.config.init_alpha)
            self.beta.fill_(self.config.init_beta)
        self._set_cache_columns()

    def _resize_cache(self, entries: int) -> None:
        device = self.cache_keys.device
        self.cache_keys = nn.Parameter(
            torch.zeros(entries, self.backbone.embed_dim, device=device), requires_grad=False
        )
        self.cache_labels = torch.zeros(entries, dtype=torch.long, device=device)

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """The saved tensors, the cache resized to the saved number of entries first."""
        if "cache_keys" in state_dict:
            self._resize_cache(len(state_dict["cache_keys"]))
        super().load_prompt(state_dict, source)
        self._set_cache_columns()

    def cache_logits(self, image: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """exp(-beta (1 - affinity)) V for normalised image features, as the reference writes it."""
        return self.cache_logits_of(image @ self.cache_keys.T, beta)

    def cache_logits_of(self, affinity: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """The cache logits of the affinities [images, entries] of images with the keys. The product with the
        one-hot values V is a sum of each class's entries (C times fewer operations than the matrix product)."""
        weights = (beta * affinity - beta).exp()
        columns = self.cache_columns
        if not bool((columns >= 0).all()):
            kept = columns >= 0
            weights, columns = weights[:, kept], columns[kept]
        logits = torch.zeros(len(affinity), len(self.classnames), device=weights.device, dtype=weights.dtype)
        return logits.index_add(1, columns, weights)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Class logits of images (`pixel_values`, or the backbone's `image_embeds`): CLIP's plus alpha times the
        cache's; with `labels`, the cross-entropy."""
        image = F.normalize(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes).float(), dim=-1
        )
        logits = self.backbone.logits(image, self.text_embeds) + self.alpha * self.cache_logits(image, self.beta)
        return self.classification_output(
            logits, labels, return_dict, image_embeds=image, text_embeds=self.text_embeds
        )

    def describe_prompt(self) -> str:
        return f"a cache of {len(self.cache_keys)} entries of {self.backbone.embed_dim} dims"

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        fitted = len(config.fitted_classnames or [])
        return [
            ("cache", f"{len(self.cache_keys)} entries ({fitted} classes), each the mean of {config.augment_views} "
             "augmented views" + (", keys fine-tuned" if config.fine_tune else "")),
            ("alpha, beta (searched on the validation split)", f"{self.alpha.item():.4g}, {self.beta.item():.4g}"),
            ("search grid [beta, alpha]", f"scale {config.search_scale}, steps {config.search_steps}"),
            ("class prompts (`templates`)", ", ".join(f'"{template}"' for template in config.templates)),
        ]  # fmt: skip

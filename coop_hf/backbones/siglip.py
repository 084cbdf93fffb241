"""SigLIP and SigLIP 2 (`SiglipModel`, `Siglip2Model`): sigmoid-trained towers with a bias on the logits.

The text tower is bidirectional: prompts are padded to the full 64 tokens on the tokenizer's side (SigLIP 2's pads on
the left), and the text feature is the last position's, through the text head. The padding is attended where the
tokenizer returns no attention mask, masked where it does, exactly as transformers' own zero-shot pipeline feeds the
model. There is no start token. Being bidirectional, the text tower never takes the shared-prefix fast path.

SigLIP 2 comes in two forms: the fixed-resolution checkpoints are `SiglipModel`s (with a Gemma tokenizer), the
NaFlex ones `Siglip2Model`s, whose image tower takes flattened patches; `Siglip2Backbone` cuts CoOp's square crops
into the full grid of patches, so every family reads the same pixels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from .base import Backbone


class SiglipBackbone(Backbone):
    """SigLIP (and fixed-resolution SigLIP 2): prompts padded to 64 tokens, pooled at the last one, then the head."""

    family = "siglip"
    display_name = "SigLIP"
    model_types = ("siglip",)
    causal_text = False
    pad_prompts = True
    text_projection_name = None
    image_projection_name = None
    vision_pools_class_token = False  # the attention-pooling head reads every token

    @property
    def embed_dim(self) -> int:
        return self.text_config.projection_size

    def tokenize(self, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded to the full length on the tokenizer's side, with its attention mask where it returns one (then the
        padding is not attended, as in transformers' zero-shot pipeline; else every position is)."""
        inputs = tokenizer(texts, padding="max_length", max_length=self.max_text_length, return_tensors="pt")
        return {name: inputs[name] for name in ("input_ids", "attention_mask") if name in inputs}

    def pool_positions(self, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
        return torch.full((len(input_ids),), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)

    def project_text(self, pooled: torch.Tensor, modules: dict[str, nn.Module] | None = None) -> torch.Tensor:
        text_model = (modules or self.text_modules())["text_model"]
        return text_model.head(text_model.final_layer_norm(pooled))

    @property
    def logit_bias(self) -> torch.Tensor:
        return self.model.logit_bias


class Siglip2Backbone(SiglipBackbone):
    """SigLIP 2 NaFlex (`Siglip2Model`): SigLIP's text side; images as the full grid of `patch_size` patches."""

    family = "siglip2"
    display_name = "SigLIP 2 (NaFlex)"
    model_types = ("siglip2",)
    takes_patches = True

    def image_processor(self, processor: Any) -> Any:
        """NaFlex resizes each image to its own patch grid; CoOp's transforms crop a square, so a NaFlex processor
        becomes SigLIP's fixed-size one at the largest square grid it allows (16 x 16 patches of 16 pixels: 256 px),
        with its mean, std and resampling."""
        if getattr(processor, "max_num_patches", None) is None:
            return processor
        side = math.isqrt(processor.max_num_patches) * processor.patch_size
        return SiglipImageProcessorPil(
            size={"height": side, "width": side},
            resample=processor.resample,
            image_mean=processor.image_mean,
            image_std=processor.image_std,
            rescale_factor=processor.rescale_factor,
        )

    def _image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Square images [B, 3, H, W] (CoOp's transforms) cut into their full grid of patches, or the NaFlex
        processor's own patches [B, patches, patch_dim] with their mask and grid shapes (each image's aspect ratio)."""
        if pixel_values.dim() == 3:
            if pixel_attention_mask is None or spatial_shapes is None:
                raise ValueError(
                    "NaFlex patches [batch, patches, patch_dim] come with pixel_attention_mask and spatial_shapes: "
                    "pass the image processor's whole output."
                )
            return self.model.get_image_features(
                pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask, spatial_shapes=spatial_shapes
            ).pooler_output
        patch = self.model.config.vision_config.patch_size
        batch, channels, height, width = pixel_values.shape
        rows, columns = height // patch, width // patch
        # [B, C, rows, p, columns, p] -> [B, rows * columns, p * p * C], the order of Siglip2ImageProcessor.
        patches = pixel_values[:, :, : rows * patch, : columns * patch].reshape(
            batch, channels, rows, patch, columns, patch
        )
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * columns, patch * patch * channels)
        spatial_shapes = torch.tensor([[rows, columns]] * batch, device=pixel_values.device)
        mask = torch.ones(batch, rows * columns, dtype=torch.int32, device=pixel_values.device)
        return self.model.get_image_features(
            pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=spatial_shapes
        ).pooler_output

"""CLIP (`CLIPModel`, OpenAI and OpenCLIP checkpoints converted to transformers): the layout `Backbone` describes."""

from __future__ import annotations

import torch

from .base import Backbone


class ClipBackbone(Backbone):
    """CLIP: [SOS] prompt [EOS], 77 tokens at most, a causal text tower pooled at the end-of-text token.

    Like `CLIPTextModel`, checkpoints whose config still says `eos_token_id=2` (the first CLIP conversions) pool at
    the argmax of the ids, which is the end-of-text token of CLIP's vocabulary.
    """

    family = "clip"
    display_name = "CLIP"
    model_types = ("clip",)

    def pool_positions(self, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
        if self.text_config.eos_token_id == 2:
            return input_ids.argmax(dim=-1)
        return super().pool_positions(input_ids, eos_token_id)

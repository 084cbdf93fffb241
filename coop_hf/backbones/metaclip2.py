"""MetaCLIP 2 (`MetaClip2Model`, the multilingual worldwide checkpoints): CLIP's towers with an XLM-V tokenizer."""

from __future__ import annotations

from .base import Backbone


class MetaClip2Backbone(Backbone):
    """MetaCLIP 2: <s> prompt </s> with a SentencePiece vocabulary, a causal text tower pooled at the first
    end-of-text id (`text_config.eos_token_id`), CLIP's projections and scale."""

    family = "metaclip_2"
    display_name = "MetaCLIP 2"
    model_types = ("metaclip_2",)

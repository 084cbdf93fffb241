"""Small random-weight models of every backbone family, built from transformers' own config classes.

CLIP uses the real CLIP BPE tokenizer from ../shared. No SentencePiece or Gemma tokenizer file can be had offline,
so the other families get the small word-level tokenizer of `coop_hf.testing`, with each family's special-token
layout: SigLIP's (no start token, </s> appended), SigLIP 2's Gemma-style (<bos> ... <eos>) and MetaCLIP 2's
XLM-R-style (<s> ... </s>). The package derives every layout from the tokenizer itself, so these exercise the same
code paths a real tokenizer would.
"""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedModel

from coop_hf.testing import random_backbone, word_tokenizer

FAMILIES = ("clip", "metaclip_2", "siglip", "siglip2")
CAUSAL = {"clip": True, "metaclip_2": True, "siglip": False, "siglip2": False}
WORDS = "daisy rose sunflower tulip sea lion type flower pet itap".split()
CLASSNAMES = ["daisy", "sea lion", "rose", "tulip"]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
VISION = {
    "metaclip_2": dict(TOWER, image_size=64, patch_size=16),
    "siglip": dict(TOWER, image_size=64, patch_size=16),
    "siglip2": dict(TOWER, num_patches=16, patch_size=16),
}


def tiny_backbone(family: str, clip_model: PreTrainedModel | None = None, seed: int = 0):
    """(model, tokenizer) of a two-layer random model of `family` (`clip_model`: the tiny CLIP to use for "clip")."""
    if family == "clip":
        from conftest import VIT_B32

        return clip_model, AutoTokenizer.from_pretrained(VIT_B32)
    tokenizer = word_tokenizer(family, WORDS, max_length=32)
    text = dict(TOWER, max_position_embeddings=32)
    model = random_backbone(family, tokenizer, text=text, vision=VISION[family], projection_dim=16, seed=seed)
    return model, tokenizer

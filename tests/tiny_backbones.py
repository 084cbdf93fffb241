"""Small random-weight models of every backbone family, built from transformers' own config classes, each with its
family's REAL tokenizer class (`coop_hf.testing.tiny_tokenizer`: a small vocabulary trained offline, reloaded through
`AutoTokenizer` as from the Hub). CLIP uses the real CLIP BPE tokenizer from ../shared.
"""

from __future__ import annotations

from functools import cache

from transformers import AutoTokenizer, PreTrainedModel

from coop_hf.testing import random_backbone, tiny_tokenizer

FAMILIES = ("clip", "metaclip_2", "siglip", "siglip2")
CAUSAL = {"clip": True, "metaclip_2": True, "siglip": False, "siglip2": False}
WORDS = "daisy rose sunflower tulip sea lion type flower pet itap".split()
CLASSNAMES = ["daisy", "sea lion", "rose", "tulip"]
SENTENCES = [f"a photo of a {word}." for word in WORDS] + [f"a {word} is a type of flower." for word in WORDS]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TEXT_LENGTH = {"metaclip_2": 77, "siglip": 64, "siglip2": 64}  # the real lengths (SigLIP's pipeline pads to 64)
VISION = {
    "metaclip_2": dict(TOWER, image_size=64, patch_size=16),
    "siglip": dict(TOWER, image_size=64, patch_size=16),
    "siglip2": dict(TOWER, num_patches=16, patch_size=16),
}


@cache
def family_tokenizer(family: str):
    """The family's tiny real tokenizer (trained once per session)."""
    return tiny_tokenizer(family, SENTENCES, max_length=TEXT_LENGTH[family])


def tiny_backbone(family: str, clip_model: PreTrainedModel | None = None, seed: int = 0):
    """(model, tokenizer) of a two-layer random model of `family` (`clip_model`: the tiny CLIP to use for "clip")."""
    if family == "clip":
        from conftest import VIT_B32

        return clip_model, AutoTokenizer.from_pretrained(VIT_B32)
    tokenizer = family_tokenizer(family)
    text = dict(TOWER, max_position_embeddings=TEXT_LENGTH[family])
    model = random_backbone(family, tokenizer, text=text, vision=VISION[family], projection_dim=16, seed=seed)
    return model, tokenizer

"""Small random-weight models of every backbone family, built from transformers' own config classes.

CLIP uses the real CLIP BPE tokenizer from ../shared. No SentencePiece or Gemma tokenizer file can be had offline,
so the other families get a small word-level tokenizer built here with each family's special-token layout:
SigLIP's (no start token, </s> appended), SigLIP 2's Gemma-style (<bos> ... <eos>) and MetaCLIP 2's XLM-R-style
(<s> ... </s>). The package derives every layout from the tokenizer itself, so these exercise the same code paths a
real tokenizer would.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    MetaClip2Config,
    MetaClip2Model,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
)

FAMILIES = ("clip", "metaclip_2", "siglip", "siglip2")
CAUSAL = {"clip": True, "metaclip_2": True, "siglip": False, "siglip2": False}
WORDS = "a photo of the x . , daisy rose sunflower tulip sea lion type flower pet itap".split()
CLASSNAMES = ["daisy", "sea lion", "rose", "tulip"]
SPECIAL_TOKENS = {  # family: (start token or None, end token)
    "metaclip_2": ("<s>", "</s>"),
    "siglip": (None, "</s>"),
    "siglip2": ("<bos>", "<eos>"),
}
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def word_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `WORDS` with the family's special tokens (unknown words: one <unk> each)."""
    start, end = SPECIAL_TOKENS[family]
    specials = ["<pad>", end, "<unk>"] + ([start] if start else [])
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    template = f"{start} $A {end}" if start else f"$A {end}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(token, vocab[token]) for token in (start, end) if token]
    )
    names = dict(eos_token=end, pad_token="<pad>", unk_token="<unk>", model_max_length=32)
    if start:
        names["bos_token"] = start
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)


def tiny_backbone(family: str, clip_model: PreTrainedModel | None = None, seed: int = 0):
    """(model, tokenizer) of a two-layer random model of `family` (`clip_model`: the tiny CLIP to use for "clip")."""
    if family == "clip":
        return clip_model, AutoTokenizer.from_pretrained(_vit_b32())
    tokenizer = word_tokenizer(family)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    ids["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    text = dict(TEXT, vocab_size=len(tokenizer), max_position_embeddings=32, **ids)
    torch.manual_seed(seed)
    if family == "metaclip_2":
        vision = dict(VISION, image_size=64, patch_size=16)
        model = MetaClip2Model(MetaClip2Config(text_config=text, vision_config=vision, projection_dim=16))
    elif family == "siglip":
        vision = dict(VISION, image_size=64, patch_size=16)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    else:
        vision = dict(VISION, num_patches=16, patch_size=16)
        model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision))
    if family.startswith("siglip"):
        with torch.no_grad():  # a scale and a bias that matter, as in trained checkpoints
            model.logit_scale.fill_(2.0)
            model.logit_bias.fill_(-3.0)
    return model.eval(), tokenizer


def _vit_b32():
    from conftest import VIT_B32

    return VIT_B32

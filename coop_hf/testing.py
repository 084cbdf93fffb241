"""Random-weight backbones of every family, built from transformers' own config classes, and word-level tokenizers
with each family's special-token layout: what tests and benchmarks build models from where no checkpoint can be
downloaded.

No SentencePiece or Gemma tokenizer file ships with a package, so `word_tokenizer` stands in for SigLIP's (no start
token, </s> appended), SigLIP 2's Gemma-style (<bos> ... <eos>) and MetaCLIP 2's XLM-R-style (<s> ... </s>): one
token per word or punctuation mark. coop-hf derives every prompt layout from the tokenizer itself, so these exercise
the same code paths a real tokenizer does. CLIP has its real BPE tokenizer.

```python
>>> from coop_hf.testing import random_backbone, word_tokenizer

>>> tokenizer = word_tokenizer("siglip", ["a", "photo", "of", "daisy", "rose"])
>>> model = random_backbone("siglip", tokenizer, text=dict(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=4, intermediate_size=64), vision=dict(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=4, intermediate_size=64, image_size=64, patch_size=16))
```
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    MetaClip2Config,
    MetaClip2Model,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
)

SPECIAL_TOKENS = {  # family: (start token or None, end token)
    "metaclip_2": ("<s>", "</s>"),
    "siglip": (None, "</s>"),
    "siglip2": ("<bos>", "<eos>"),
}
CONTEXT_WORDS = ("a", "photo", "of", "the", "x", ".", ",")
"""Words every stand-in vocabulary holds: CoOp's phrase and placeholder, and the prompts' punctuation."""


def word_tokenizer(family: str, words: list[str], *, max_length: int = 64) -> PreTrainedTokenizerFast:
    """A tokenizer of `family`'s special-token layout over `words` (and `CONTEXT_WORDS`): split at spaces and
    punctuation, one id per word, one <unk> per unknown word."""
    if family not in SPECIAL_TOKENS:
        raise ValueError(f"No stand-in tokenizer for {family!r}: use one of {', '.join(SPECIAL_TOKENS)}.")
    start, end = SPECIAL_TOKENS[family]
    specials = ["<pad>", end, "<unk>"] + ([start] if start else [])
    vocabulary = list(dict.fromkeys([*specials, *CONTEXT_WORDS, *words]))
    ids = {token: index for index, token in enumerate(vocabulary)}
    tokenizer = Tokenizer(models.WordLevel(ids, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}" if start else f"$A {end}",
        special_tokens=[(token, ids[token]) for token in (start, end) if token],
    )
    names: dict[str, Any] = dict(eos_token=end, pad_token="<pad>", unk_token="<unk>", model_max_length=max_length)
    if start:
        names["bos_token"] = start
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)


def random_backbone(
    family: str,
    tokenizer: PreTrainedTokenizerFast,
    *,
    text: dict[str, Any],
    vision: dict[str, Any],
    projection_dim: int | None = None,
    seed: int = 0,
) -> PreTrainedModel:
    """A random-weight model of `family` ("metaclip_2", "siglip" or "siglip2") in eval mode, its text config fitted
    to `tokenizer` (vocabulary, special ids); `text` and `vision` are the towers' config entries. SigLIP's scale and
    bias are set to values that matter (2 and -3), as in trained checkpoints."""
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    ids["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    text = dict(text, vocab_size=len(tokenizer), **ids)
    torch.manual_seed(seed)
    if family == "metaclip_2":
        model = MetaClip2Model(MetaClip2Config(text_config=text, vision_config=vision, projection_dim=projection_dim))
    elif family == "siglip":
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    elif family == "siglip2":
        model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision))
    else:
        raise ValueError(f"No random model of {family!r} here: use one of {', '.join(SPECIAL_TOKENS)}.")
    if family.startswith("siglip"):
        with torch.no_grad():
            model.logit_scale.fill_(2.0)
            model.logit_bias.fill_(-3.0)
    return model.eval()

"""Random-weight backbones of every family, built from transformers' own config classes, and small tokenizers of each
family's REAL tokenizer class, trained offline: what tests and benchmarks build models from where no checkpoint can be
downloaded.

`tiny_tokenizer` trains a small vocabulary on a few sentences and returns the class a Hub checkpoint of the family
loads through `AutoTokenizer`: SigLIP's `SiglipTokenizer` (SentencePiece; lowercases, strips punctuation, appends
</s>), SigLIP 2's `Siglip2Tokenizer` (Gemma's byte-fallback BPE; lowercases, appends <eos>, pads on the LEFT) and
MetaCLIP 2's `XLMRobertaTokenizer` (XLM-V's SentencePiece unigram; <s> ... </s>), saved and reloaded as from the Hub.
CLIP's real BPE tokenizer comes with any CLIP checkpoint, so it needs no stand-in here.

```python
>>> from coop_hf.testing import random_backbone, tiny_tokenizer

>>> tokenizer = tiny_tokenizer("siglip", ["a photo of a daisy.", "a photo of a rose."], max_length=64)
>>> model = random_backbone("siglip", tokenizer, text=dict(hidden_size=32, num_hidden_layers=2,
...     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64), vision=dict(hidden_size=32,
...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=64, patch_size=16))
```
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import sentencepiece
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    MetaClip2Config,
    MetaClip2Model,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Siglip2Config,
    Siglip2Model,
    Siglip2Tokenizer,
    SiglipConfig,
    SiglipModel,
    SiglipTokenizer,
    XLMRobertaTokenizer,
)

FAMILIES = ("metaclip_2", "siglip", "siglip2")
"""The families `tiny_tokenizer` and `random_backbone` build (CLIP's tokenizer ships with its checkpoints)."""
CONTEXT_SENTENCES = (
    "a photo of a X.",
    "X X X X X X X X X X X X X X X X the photo of a type of pet.",
    "x x x x x x x x x x x x x x x x the photo of a type of pet.",  # lowercasing tokenizers see this X
    "this is a photo of a X.",
)
"""Sentences every tiny vocabulary is trained on: CoOp's phrase and its placeholder X (one token, as in every real
vocabulary), and the prompts' punctuation."""


def tiny_tokenizer(family: str, sentences: list[str], *, max_length: int = 64) -> PreTrainedTokenizerBase:
    """A tokenizer of `family`'s real class ("metaclip_2", "siglip", "siglip2") with a small vocabulary trained on
    `sentences` (and `CONTEXT_SENTENCES`), saved and reloaded through `AutoTokenizer` as a Hub checkpoint's is."""
    if family not in FAMILIES:
        raise ValueError(f"No tiny tokenizer of {family!r}: use one of {', '.join(FAMILIES)}.")
    corpus = [*CONTEXT_SENTENCES, *sentences]
    folder = tempfile.mkdtemp(prefix=f"coop-hf-{family}-tokenizer-")  # kept: SentencePiece reads its file on saving
    if family == "siglip2":
        tokenizer = _gemma_bpe(corpus, max_length)
    else:
        model_file = os.path.join(folder, "spiece.model")
        with open(model_file, "wb") as file:
            file.write(_sentencepiece(corpus))
        if family == "siglip":
            tokenizer = SiglipTokenizer(vocab_file=model_file, model_max_length=max_length)
        else:
            tokenizer = _xlm_roberta(model_file, max_length)
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def _sentencepiece(corpus: list[str]) -> bytes:
    """A small SentencePiece model of `corpus` (what SigLIP's and XLM-V's tokenizers read), as bytes. Its pieces are
    learned by BPE: on a few sentences the unigram trainer keeps little more than single characters."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 10), model_writer=model, vocab_size=100, model_type="bpe",
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def _xlm_roberta(model_file: str, max_length: int) -> XLMRobertaTokenizer:
    """XLM-R's layout over a SentencePiece model: <s> <pad> </s> <unk> first, then the pieces, then <mask>."""
    processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
    pieces = [
        (processor.id_to_piece(index), processor.get_score(index))
        for index in range(processor.get_piece_size())
        if not (processor.is_control(index) or processor.is_unknown(index))
    ]
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return XLMRobertaTokenizer(vocab=[*specials, *pieces, ("<mask>", 0.0)], model_max_length=max_length)


def _gemma_bpe(corpus: list[str], max_length: int) -> Siglip2Tokenizer:
    """Gemma's byte-fallback BPE as SigLIP 2 uses it (lowercased, the space kept at the end of each word), with the
    end-of-text token appended and no start token."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "\u2581")])
    bpe.pre_tokenizer = pre_tokenizers.Split(pattern="\u2581", behavior="merged_with_previous")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    bpe.train_from_iterator(corpus * 10, trainers.BpeTrainer(vocab_size=150, special_tokens=specials))
    model = json.loads(bpe.to_str())["model"]
    return Siglip2Tokenizer(
        vocab=model["vocab"], merges=[tuple(merge) for merge in model["merges"]], add_bos_token=False,
        add_eos_token=True, model_max_length=max_length,
    )  # fmt: skip


def random_backbone(
    family: str,
    tokenizer: PreTrainedTokenizerBase,
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
        raise ValueError(f"No random model of {family!r} here: use one of {', '.join(FAMILIES)}.")
    if family.startswith("siglip"):
        with torch.no_grad():
            model.logit_scale.fill_(2.0)
            model.logit_bias.fill_(-3.0)
    return model.eval()

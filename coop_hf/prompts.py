"""Token ids of CoOp prompts: where the context vectors, the class tokens and the pooled token sit, in the token
layout of the backbone's family (a start token or none, padded to the full length or cut after the pooled token)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .backbones import Backbone

# Stand-in word for a learned context vector while tokenizing, as in the reference code; its embedding is
# always replaced by the context, so which word it is does not matter.
CONTEXT_PLACEHOLDER = "X"


@dataclass
class PromptTokens:
    """The tokenized prompts of a class list, cut after the last pooled token (or padded to the full length where
    the backbone reads every position).

    Attributes:
        input_ids: [classes, length] token ids; the context positions hold placeholder ids.
        context_positions: [classes, n_ctx] index of each context vector in its prompt.
        eot_positions: [classes] index of the token whose hidden state is the text feature: the end-of-text token
            (CLIP, MetaCLIP 2) or the last position (SigLIP).
        text_start: index of the first token after the leading special tokens (1 after CLIP's [SOS], 0 in SigLIP),
            in each prompt before padding.
        attention_mask: [classes, length] 1 for the prompt's tokens, 0 for padding, where the family pads every
            prompt and its tokenizer returns attention masks (transformers' SigLIP and SigLIP 2 tokenizers: the
            padding is then not attended, as in `pipeline("zero-shot-image-classification")`); else None.
    """

    input_ids: torch.Tensor
    context_positions: torch.Tensor
    eot_positions: torch.Tensor
    text_start: int
    attention_mask: torch.Tensor | None = None


def context_init_ids(tokenizer: PreTrainedTokenizerBase, ctx_init: str) -> list[int]:
    """Token ids of an initialisation phrase as it tokenizes inside a prompt ("<phrase> <class>."); their count is
    the context length. Alone, a phrase may end in another token: SigLIP 2's tokenizer keeps the space after a word
    in the word's token ("a▁"), which the phrase's last word has only when a class name follows."""
    alone = tokenizer(ctx_init, add_special_tokens=False)["input_ids"]
    if not alone:
        raise ValueError(f"ctx_init={ctx_init!r} tokenizes to nothing: give a phrase such as 'a photo of a'.")
    sentence = tokenizer(f"{ctx_init} {CONTEXT_PLACEHOLDER}.", add_special_tokens=False)["input_ids"]
    tail = tokenizer(f"{CONTEXT_PLACEHOLDER}.", add_special_tokens=False)["input_ids"]
    if len(sentence) > len(tail) and sentence[-len(tail) :] == tail:
        return sentence[: -len(tail)]
    return alone


DEFAULT_N_CTX = 16
"""CoOp's context length M when neither `n_ctx` nor an initialisation phrase gives one."""


def resolve_n_ctx(
    tokenizer: PreTrainedTokenizerBase, n_ctx: int | None, ctx_init: str | None, *, default_of: str | None = None
) -> int:
    """The context length a model gets, the one rule for every method that initialises its context from a phrase:
    the token count of `ctx_init` when there is a phrase, else `n_ctx` (default 16).

    An `n_ctx` that contradicts the phrase raises a `ValueError` naming both flags; `default_of` names the method
    whose default phrase it is (then an empty `--ctx_init` asks for random vectors instead).
    """
    if not ctx_init:
        return DEFAULT_N_CTX if n_ctx is None else n_ctx
    phrase_tokens = len(context_init_ids(tokenizer, ctx_init))
    if n_ctx is not None and n_ctx != phrase_tokens:
        whose = f"{default_of}'s default ctx_init" if default_of else "ctx_init"
        fix = (
            f"for {n_ctx} random context vectors also pass --ctx_init \"\" (ctx_init=''), or drop --n_ctx."
            if default_of
            else f"drop --n_ctx or set it to {phrase_tokens}."
        )
        raise ValueError(
            f"n_ctx={n_ctx} (--n_ctx) contradicts {whose}={ctx_init!r} (--ctx_init): the phrase is {phrase_tokens} "
            f"BPE tokens but n_ctx={n_ctx}, and the context length is the phrase's token count; {fix}"
        )
    return phrase_tokens


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase,
    classnames: list[str],
    *,
    n_ctx: int,
    ctx_init: str | None,
    class_token_position: str,
    backbone: Backbone,
) -> PromptTokens:
    """Tokenize "<context> <class>." with the family's special tokens for every class and move the class tokens to
    their position.

    The sentence is tokenized whole, exactly as the backbone would tokenize the hand-written prompt, and the class
    tokens are then moved to the front or the middle of the context for those positions. The context starts after
    the tokenizer's leading special tokens (CLIP's [SOS], MetaCLIP 2's <s>; none for SigLIP).
    """
    context_text = ctx_init if ctx_init is not None else " ".join([CONTEXT_PLACEHOLDER] * n_ctx)
    if ctx_init is None and len(tokenizer(context_text, add_special_tokens=False)["input_ids"]) != n_ctx:
        raise ValueError(
            f"This tokenizer splits the context placeholder {CONTEXT_PLACEHOLDER!r} into several tokens, so the "
            f"{n_ctx} context vectors cannot be placed: initialise the context from a phrase (--ctx_init)."
        )
    eos_id = tokenizer.eos_token_id
    max_length = backbone.max_text_length
    prompts, context_positions = [], []
    for name in classnames:
        sentence = f"{context_text} {name}."
        ids = tokenizer(sentence, add_special_tokens=True)["input_ids"]
        if len(ids) > max_length:
            raise ValueError(
                f"The prompt for class {name!r} is {len(ids)} tokens long but the text model takes at most "
                f"{max_length}: shorten the class name or use fewer context vectors (n_ctx={n_ctx})."
            )
        start = _leading_special_tokens(tokenizer, sentence, ids)
        context = list(range(start, start + n_ctx))
        name_len = _class_token_count(tokenizer, name, ids, start + n_ctx, class_token_position)
        name_span = list(range(start + n_ctx, start + n_ctx + name_len))
        rest = list(range(start + n_ctx + name_len, len(ids)))
        if class_token_position == "end":
            order = context + name_span
        elif class_token_position == "front":
            order = name_span + context
        else:
            half = n_ctx // 2
            order = context[:half] + name_span + context[half:]
        order = list(range(start)) + order + rest
        prompts.append([ids[i] for i in order])
        context_positions.append([order.index(i) for i in context])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    length = max_length if backbone.pad_prompts else max(len(ids) for ids in prompts)
    input_ids = torch.full((len(classnames), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    context_positions = torch.tensor(context_positions, dtype=torch.long)
    # Where the tokenizer pads on the left (SigLIP 2's), the prompt ends at the last position, as it tokenizes.
    left = backbone.pad_prompts and tokenizer.padding_side == "left"
    for row, ids in enumerate(prompts):
        offset = length - len(ids) if left else 0
        input_ids[row, offset : offset + len(ids)] = torch.tensor(ids)
        attention_mask[row, offset : offset + len(ids)] = 1
        context_positions[row] += offset
    eot_positions = backbone.pool_positions(input_ids, eos_id)
    if not backbone.pad_prompts:  # cut after the last pooled token: what follows cannot change a causal feature
        input_ids = input_ids[:, : int(eot_positions.max()) + 1]
    masks_padding = backbone.pad_prompts and "attention_mask" in tokenizer.model_input_names
    return PromptTokens(
        input_ids=input_ids,
        context_positions=context_positions,
        eot_positions=eot_positions.to(torch.long),
        text_start=start,
        attention_mask=attention_mask if masks_padding else None,
    )


def _leading_special_tokens(tokenizer: PreTrainedTokenizerBase, sentence: str, ids: list[int]) -> int:
    """How many special tokens the tokenizer puts before the text of `sentence` (tokenized as `ids`)."""
    plain = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    for start in range(len(ids) - len(plain) + 1):
        if ids[start : start + len(plain)] == plain:
            return start
    raise ValueError(f"The tokenizer's special tokens interleave the text of {sentence!r}: cannot place the context.")


def _class_token_count(
    tokenizer: PreTrainedTokenizerBase, name: str, sentence_ids: list[int], start: int, position: str
) -> int:
    """Number of tokens the class name occupies in the tokenized sentence, starting at `start`."""
    name_ids = tokenizer(name, add_special_tokens=False)["input_ids"]
    if position != "end" and sentence_ids[start : start + len(name_ids)] != name_ids:
        raise ValueError(
            f"The class name {name!r} tokenizes differently inside the prompt than alone, so its tokens cannot "
            f"be moved to the {position} of the context: rename the class or use class_token_position='end'."
        )
    return len(name_ids)

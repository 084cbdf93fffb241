"""Token ids of CoOp prompts: where the context vectors, the class tokens and the end-of-text token sit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

# Stand-in word for a learned context vector while tokenizing, as in the reference code; its embedding is
# always replaced by the context, so which word it is does not matter.
CONTEXT_PLACEHOLDER = "X"


@dataclass
class PromptTokens:
    """The tokenized prompts of a class list, cut after the longest end-of-text token.

    Attributes:
        input_ids: [classes, length] token ids; the context positions hold placeholder ids.
        context_positions: [classes, n_ctx] index of each context vector in its prompt.
        eot_positions: [classes] index of the end-of-text token, where CLIP pools the text feature.
    """

    input_ids: torch.Tensor
    context_positions: torch.Tensor
    eot_positions: torch.Tensor


def context_init_ids(tokenizer: PreTrainedTokenizerBase, ctx_init: str) -> list[int]:
    """BPE token ids of an initialisation phrase; their count is the context length."""
    ids = tokenizer(ctx_init, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"ctx_init={ctx_init!r} tokenizes to nothing: give a phrase such as 'a photo of a'.")
    return ids


DEFAULT_N_CTX = 16
"""CoOp's context length M when neither `n_ctx` nor an initialisation phrase gives one."""


def resolve_n_ctx(tokenizer: PreTrainedTokenizerBase, n_ctx: int | None, ctx_init: str | None) -> int:
    """The context length a model gets: the BPE token count of `ctx_init` when given, else `n_ctx` (default 16).

    An explicit `n_ctx` that contradicts `ctx_init` raises a `ValueError` naming both.
    """
    if not ctx_init:
        return DEFAULT_N_CTX if n_ctx is None else n_ctx
    phrase_tokens = len(context_init_ids(tokenizer, ctx_init))
    if n_ctx is not None and n_ctx != phrase_tokens:
        raise ValueError(
            f"n_ctx={n_ctx} (--n_ctx) contradicts ctx_init={ctx_init!r} (--ctx_init), which is {phrase_tokens} BPE "
            f"tokens: the context length is the phrase's token count. Drop --n_ctx or set it to {phrase_tokens}."
        )
    return phrase_tokens


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase,
    classnames: list[str],
    *,
    n_ctx: int,
    ctx_init: str | None,
    class_token_position: str,
    max_length: int,
) -> PromptTokens:
    """Tokenize "[SOS] <context> <class>. [EOS]" for every class and move the class tokens to their position.

    The sentence is tokenized whole, exactly as CLIP would tokenize the hand-written prompt, and the class
    tokens are then moved to the front or the middle of the context for those positions.
    """
    context_text = ctx_init if ctx_init is not None else " ".join([CONTEXT_PLACEHOLDER] * n_ctx)
    eos_id = tokenizer.eos_token_id
    prompts, context_positions, eot_positions = [], [], []
    for name in classnames:
        ids = tokenizer(f"{context_text} {name}.", add_special_tokens=True)["input_ids"]
        if len(ids) > max_length:
            raise ValueError(
                f"The prompt for class {name!r} is {len(ids)} tokens long but the text model takes at most "
                f"{max_length}: shorten the class name or use fewer context vectors (n_ctx={n_ctx})."
            )
        context = list(range(1, 1 + n_ctx))
        name_len = _class_token_count(tokenizer, name, ids, 1 + n_ctx, class_token_position)
        name_span = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        rest = list(range(1 + n_ctx + name_len, len(ids)))
        if class_token_position == "end":
            order = context + name_span
        elif class_token_position == "front":
            order = name_span + context
        else:
            half = n_ctx // 2
            order = context[:half] + name_span + context[half:]
        order = [0] + order + rest
        reordered = [ids[i] for i in order]
        prompts.append(reordered)
        context_positions.append([order.index(i) for i in context])
        eot_positions.append(reordered.index(eos_id))
    length = max(eot_positions) + 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    input_ids = torch.full((len(classnames), length), pad_id, dtype=torch.long)
    for row, ids in enumerate(prompts):
        kept = ids[:length]
        input_ids[row, : len(kept)] = torch.tensor(kept)
    return PromptTokens(
        input_ids=input_ids,
        context_positions=torch.tensor(context_positions, dtype=torch.long),
        eot_positions=torch.tensor(eot_positions, dtype=torch.long),
    )


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

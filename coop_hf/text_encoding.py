"""Text features of prompts given as token embeddings, through the backbone's own text modules
(`coop_hf.backbones`), with the shared prompt prefix encoded once where that is exact.

`encode_prompts` is what the methods call: the shared-prefix path on a causal text tower (CLIP, MetaCLIP 2), the
plain path on a bidirectional one (SigLIP, SigLIP 2), where every token sees every other.

With a unified context and the class name after it, every prompt starts with the same [SOS] + context
embeddings. The text transformer is causal, so the hidden states of those positions are the same for every
class at every layer: `encode_shared_prefix` computes them once (batch 1) and lets each class's remaining
tokens attend to the prefix keys/values plus their own. `encode_plain` is the straightforward computation
(every prompt through the whole encoder), kept as the reference that the fast path is tested against.

On a causal tower `CoOpModel.get_text_features` always takes the shared-prefix path, with the prefix the token layout
allows: [SOS] + context (end position), [SOS] + the first half of the context (middle), or [SOS] alone (front position,
class-specific context). Measured on ViT-B/32 and TinyCLIP (CPU, fp32, forward + backward of the text features, 10
and 102 classes), it is faster than the plain pass even with [SOS] alone (1.05-1.5x; its packing of per-class tokens
without padding and its last-layer shortcut pay for themselves), 1.3-1.9x with 6-9 shared tokens and 1.6-3.8x
with 17; at 1000 classes with [SOS] alone the two are on par.

The fast paths are exact in distribution, not only in value: a module that draws random numbers in its forward
(CLIP-LoRA's LoRA dropout, attention dropout a config turns on in training, drop-path) would draw ONE mask for a
prefix encoded once, where the reference draws an independent one for every class and position. While such a module
is active in the text tower (`draws_random_numbers`), `encode_prompts` takes the plain path, every class with its own
draws; in eval mode, or with the dropout at 0, the fast path runs.

`encode_prefixes` generalises this to several prefixes, each followed by every class's suffix: CoCoOp's prompts
for a batch of images share the class tokens but each image has its own [SOS] + context prefix, encoded once for
all of its classes (`CoCoOpModel.get_text_features`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_function
from transformers import PreTrainedModel

from .backbones import Backbone, LayerHook, backbone_for


def shared_prefix_length(
    input_ids: torch.Tensor,
    context_positions: torch.Tensor,
    eot_positions: torch.Tensor,
    *,
    class_specific: bool,
) -> int:
    """Number of leading positions whose input embedding is the same in every prompt, from the token layout alone.

    A position is shared when every prompt holds the same unified context vector there, or the same token id
    (no context vector) there. The count stops at the first end-of-text token, so every prompt keeps its EOT
    in the part that is encoded per class.
    """
    num_classes, length = input_ids.shape
    n_ctx = context_positions.shape[1]
    context_index = torch.full((num_classes, length), -1, dtype=torch.long, device=input_ids.device)
    context_index.scatter_(1, context_positions, torch.arange(n_ctx, device=input_ids.device).expand(num_classes, -1))
    same_slot = (context_index == context_index[:1]).all(dim=0)
    same_token = (input_ids == input_ids[:1]).all(dim=0)
    is_context = context_index[0] >= 0
    shared = same_slot & torch.where(is_context, torch.full_like(is_context, not class_specific), same_token)
    unshared = (~shared).nonzero()
    prefix = int(unshared[0]) if len(unshared) else length
    return min(prefix, int(eot_positions.min()))


def draws_random_numbers(module: nn.Module) -> bool:
    """Whether a forward of `module` now draws random numbers: dropout with p > 0 in training mode (torch's dropout
    modules, so LoRA's and adapters' too), an attention module in training mode with a `dropout` rate > 0
    (transformers' attention dropout), a drop-path module in training mode with a `drop_prob` > 0."""
    for part in module.modules():
        if not part.training:
            continue
        if isinstance(part, nn.modules.dropout._DropoutNd):
            if part.p > 0:
                return True
        elif any(isinstance(rate, float | int) and rate > 0 for rate in _random_rates(part)):
            return True
    return False


def _random_rates(module: nn.Module) -> tuple:
    return getattr(module, "dropout", None), getattr(module, "drop_prob", None)


def encode_prompts(
    backbone: Backbone | PreTrainedModel,
    prompt_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    prefix_length: int,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    layer_hook: LayerHook | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[classes, projection_dim] text features of prompts [classes, length, width] whose first `prefix_length`
    embeddings are the same in every row: `encode_shared_prefix` on a causal text tower, else `encode_plain`
    (the same numbers, computed once per class). `encode_plain` too while a text module draws random numbers
    (`draws_random_numbers`), so that every class gets its own draws. `layer_hook(index, hidden)` runs before each
    layer and may change only positions before `prefix_length` (deep prompts), the same way in every row.
    `attention_mask` [classes, length] marks the padding of a bidirectional tower's prompts (`PromptTokens`)."""
    backbone = backbone_for(backbone)
    options = dict(chunk_size=chunk_size, checkpoint=checkpoint, layer_hook=layer_hook)
    if backbone.causal_text and not _text_tower_draws(backbone):
        return encode_shared_prefix(backbone, prompt_embeds, eot_positions, prefix_length, **options)
    return encode_plain(backbone, prompt_embeds, eot_positions, attention_mask=attention_mask, **options)


def encode_plain(
    backbone: Backbone | PreTrainedModel,
    prompt_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    layer_hook: LayerHook | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[classes, projection_dim] text features of token embeddings `prompt_embeds` [classes, length, width]:
    position embeddings, the encoder (`layer_hook(index, hidden)` before each layer), the final layer norm and the
    text projection (or head) at the pooled positions `eot_positions`. In a bidirectional tower the positions that
    `attention_mask` [classes, length] marks 0 (padding) are not attended.

    Classes are encoded in groups of equal pooled position; in a causal text tower each group is cut right after it
    (what follows the pooled token cannot change it), in a bidirectional one every position is kept.
    """
    backbone = backbone_for(backbone)
    order, chunks = _class_chunks(eot_positions, chunk_size)
    pooled = []
    for rows, eot in (group for groups in chunks for group in groups):
        end = eot + 1 if backbone.causal_text else prompt_embeds.shape[1]
        hidden = backbone.text_embeddings(inputs_embeds=prompt_embeds[rows, :end])
        mask = backbone.text_attention_mask(hidden, None if attention_mask is None else attention_mask[rows, :end])
        for index, layer in enumerate(backbone.text_layers):
            if layer_hook is not None:
                hidden = layer_hook(index, hidden)
            hidden = _maybe_checkpoint(checkpoint, layer, hidden, mask, is_causal=backbone.causal_text)
        pooled.append(hidden[:, eot])
    return backbone.project_text(_in_class_order(pooled, order))


def encode_shared_prefix(
    backbone: Backbone | PreTrainedModel,
    prompt_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    prefix_length: int,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    layer_hook: LayerHook | None = None,
) -> torch.Tensor:
    """Same result as `encode_plain` for prompts whose first `prefix_length` embeddings are the same in every row
    (and a `layer_hook` that changes only those positions).

    The prefix is read from row 0 and encoded once; the remaining tokens of each class (up to its EOT) attend to
    the prefix keys and values of each layer and, causally, to their own (`encode_prefixes` with one prefix).
    Every EOT must lie at or after `prefix_length`.
    """
    if not 0 < prefix_length <= int(eot_positions.min()):
        raise ValueError(
            f"prefix_length={prefix_length} must be >= 1 and at most the first end-of-text position "
            f"({int(eot_positions.min())})."
        )
    return encode_prefixes(
        backbone,
        prompt_embeds[:1, :prefix_length],
        prompt_embeds[:, prefix_length:],
        eot_positions,
        chunk_size=chunk_size,
        checkpoint=checkpoint,
        prefix_hook=layer_hook,
    )[0]


def encode_prefixes(
    backbone: Backbone | PreTrainedModel,
    prefix_embeds: torch.Tensor,
    suffix_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    prefix_hook: LayerHook | None = None,
) -> torch.Tensor:
    """[groups, classes, projection_dim] text features of the prompts "prefix g, then suffix c" for every prefix
    `prefix_embeds` [groups, prefix_length, width] and every class suffix `suffix_embeds` [classes, rest, width]
    (token embeddings; `eot_positions` [classes] count from the start of the whole prompt).

    Each prefix is encoded once for all classes; the suffix tokens of each class (up to its EOT) attend to the
    prefix keys and values of each layer and, causally, to their own. The suffix tokens of all prompts are packed
    without padding for the token-wise parts of each layer (projections, MLP, layer norms) and attend in groups of
    equal length; the last layer computes each prompt's EOT token only. Per layer this holds groups x classes x
    suffix tokens, never the full padded length. Every EOT must lie in the suffix. `prefix_hook(index, prefixes)`
    runs on the prefixes before each layer (deep prompts replace prefix tokens there). Exact only for a causal text
    tower (CLIP, MetaCLIP 2) in which nothing draws random numbers (refused otherwise: `draws_random_numbers`).
    """
    backbone = backbone_for(backbone)
    if not backbone.causal_text:
        raise ValueError(
            f"{backbone.display_name}'s text tower is bidirectional: a shared prefix is not the same in every prompt, "
            "so it cannot be encoded once. Use encode_plain."
        )
    if _text_tower_draws(backbone):
        raise ValueError(
            "A module of the text tower draws random numbers (dropout in training): a prefix encoded once would share "
            "one draw among every prompt. Use encode_plain, or eval mode."
        )
    embeddings = backbone.text_embeddings
    layers = backbone.text_layers
    num_groups, prefix_length = prefix_embeds.shape[:2]
    if not 0 < prefix_length <= int(eot_positions.min()):
        raise ValueError(
            f"The prefixes are {prefix_length} tokens long but must end before the first end-of-text position "
            f"({int(eot_positions.min())}) and hold at least one token."
        )
    if int(eot_positions.max()) >= prefix_length + suffix_embeds.shape[1]:
        raise ValueError(
            f"suffix_embeds holds {suffix_embeds.shape[1]} tokens, too few to reach the last end-of-text position "
            f"({int(eot_positions.max())}) after the {prefix_length} prefix tokens."
        )
    prefix = embeddings(inputs_embeds=prefix_embeds)
    prefix_keys_values = []
    for index, layer in enumerate(layers):
        if prefix_hook is not None:  # deep prompts replace prefix tokens before this layer
            prefix = prefix_hook(index, prefix)
        prefix, key, value = _prefix_layer(layer, prefix)
        prefix_keys_values.append((key, value))

    length = int(eot_positions.max()) + 1
    # Suffix token i sees every prefix token and suffix tokens 0..i of its own prompt.
    mask = torch.ones(length - prefix_length, length, dtype=torch.bool, device=suffix_embeds.device)
    mask = mask.tril(prefix_length)
    order, chunks = _class_chunks(eot_positions, chunk_size)
    pooled = []
    for groups in chunks:
        # Prompts are packed prefix-major within each group of equal EOT: prompt (g, i) is row g * classes + i.
        shapes = [(num_groups * len(rows), eot + 1 - prefix_length) for rows, eot in groups]
        hidden = torch.cat(
            [
                embeddings(
                    inputs_embeds=suffix_embeds[rows, : eot + 1 - prefix_length],
                    position_ids=embeddings.position_ids[:, prefix_length : eot + 1],
                )
                .expand(num_groups, -1, -1, -1)
                .flatten(0, 2)
                for rows, eot in groups
            ]
        )
        for index, (layer, (key, value)) in enumerate(zip(layers, prefix_keys_values, strict=True)):
            last = index == len(layers) - 1
            hidden = _maybe_checkpoint(checkpoint, _suffix_layer, layer, hidden, key, value, mask, shapes, last)
        pooled.extend(hidden.split([prompts for prompts, _ in shapes]))
    pooled = [states.view(num_groups, -1, states.shape[-1]) for states in pooled]
    features = torch.cat(pooled, dim=1)[:, torch.argsort(order)]
    return backbone.project_text(features)


def _text_tower_draws(backbone: Backbone) -> bool:
    return draws_random_numbers(backbone.text_embeddings) or any(map(draws_random_numbers, backbone.text_layers))


def _class_chunks(
    eot_positions: torch.Tensor, chunk_size: int | None
) -> tuple[torch.Tensor, list[list[tuple[torch.Tensor, int]]]]:
    """Classes sorted by EOT position, split into chunks of at most `chunk_size` classes, each chunk a list of
    (row indices, EOT position) groups of equal EOT. Returns the sorted order too."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of classes or None, got {chunk_size}.")
    order = torch.argsort(eot_positions, stable=True)
    chunks = []
    for rows in order.split(chunk_size or len(order)):
        eots = eot_positions[rows]
        chunks.append([(rows[eots == eot], eot) for eot in eots.unique().tolist()])
    return order, chunks


def _in_class_order(pooled: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """Concatenate per-chunk results (rows in `order`) and put them back in class order."""
    return torch.cat(pooled)[torch.argsort(order)]


def _maybe_checkpoint(checkpoint: bool, function, *args, **kwargs) -> torch.Tensor:
    if checkpoint and torch.is_grad_enabled():
        return checkpoint_function(function, *args, use_reentrant=False, **kwargs)
    return function(*args, **kwargs)


def _split_heads(layer: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """[batch, tokens, width] -> [batch, heads, tokens, head_dim]."""
    attention = layer.self_attn
    return states.view(*states.shape[:2], attention.num_heads, attention.head_dim).transpose(1, 2)


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    """[batch, heads, tokens, head_dim] -> [batch * tokens, width]."""
    return states.transpose(1, 2).reshape(states.shape[0] * states.shape[2], -1)


def _finish_layer(layer: nn.Module, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Attention output projection and residual, then the MLP block and residual."""
    hidden = hidden + layer.self_attn.out_proj(attended)
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def _prefix_layer(layer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One causal layer over the shared prefix [1, prefix, width]; also returns its keys and values."""
    attention = layer.self_attn
    normed = layer.layer_norm1(hidden)
    query, key, value = (
        _split_heads(layer, projection(normed))
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    attended = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=attention.scale)
    return _finish_layer(layer, hidden, _merge_heads(attended).view(hidden.shape)), key, value


def _suffix_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor,
    shapes: list[tuple[int, int]],
    last_token_only: bool,
) -> torch.Tensor:
    """One layer over packed suffix tokens [tokens, width]; `shapes` holds (prompts, suffix length) per group of
    equal length, its prompts prefix-major (prompt g * classes + i continues prefix g).

    Each prompt attends to its prefix's keys and values [prefixes, heads, prefix, head_dim] and causally to
    itself. With `last_token_only` (the last layer, read at the EOT, which ends every suffix) only each prompt's
    last token is computed and returned; the keys and values of all its tokens are still needed for it.
    """
    attention = layer.self_attn
    normed = layer.layer_norm1(hidden)
    token_counts = [prompts * suffix for prompts, suffix in shapes]
    keys = attention.k_proj(normed).split(token_counts)
    values = attention.v_proj(normed).split(token_counts)
    query_lengths = [suffix for _, suffix in shapes]
    if last_token_only:
        last_rows = _last_token_rows(shapes, hidden.device)
        hidden, normed = hidden[last_rows], normed[last_rows]
        query_lengths = [1] * len(shapes)
    query_counts = [prompts * length for (prompts, _), length in zip(shapes, query_lengths, strict=True)]
    queries = attention.q_proj(normed).split(query_counts)
    attended = []
    for (prompts, suffix), query_length, query, key, value in zip(
        shapes, query_lengths, queries, keys, values, strict=True
    ):
        key = _after_prefix(layer, prefix_key, key.view(prompts, suffix, -1))
        value = _after_prefix(layer, prefix_value, value.view(prompts, suffix, -1))
        query = _split_heads(layer, query.view(prompts, query_length, -1))
        group_mask = mask[suffix - query_length : suffix, : key.shape[2]]
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=group_mask, scale=attention.scale)
        attended.append(_merge_heads(output))
    return _finish_layer(layer, hidden, torch.cat(attended))


def _after_prefix(layer: nn.Module, prefix_states: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Each prompt's prefix keys or values (from [prefixes, heads, prefix, head_dim], prefix-major), then its own:
    [prompts, heads, prefix + suffix, head_dim]."""
    num_prefixes, heads, prefix_length, head_dim = prefix_states.shape
    own = _split_heads(layer, states)
    own = own.view(num_prefixes, -1, *own.shape[1:])
    prefix_states = prefix_states.unsqueeze(1).expand(-1, own.shape[1], -1, -1, -1)
    return torch.cat([prefix_states, own], dim=3).flatten(0, 1)


def _last_token_rows(shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Row of each prompt's last token in the packed layout (groups one after the other, prompts within)."""
    rows, start = [], 0
    for prompts, suffix in shapes:
        rows.append(torch.arange(start + suffix - 1, start + prompts * suffix, suffix, device=device))
        start += prompts * suffix
    return torch.cat(rows)

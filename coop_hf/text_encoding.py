"""Text features of CoOp prompts through CLIP's own text modules, with the shared prompt prefix encoded once.

With a unified context and the class name after it, every prompt starts with the same [SOS] + context
embeddings. The text transformer is causal, so the hidden states of those positions are the same for every
class at every layer: `encode_shared_prefix` computes them once (batch 1) and lets each class's remaining
tokens attend to the prefix keys/values plus their own. `encode_plain` is the straightforward computation
(every prompt through the whole encoder); `encode_prompts` picks one from the prompt layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as checkpoint_function
from transformers import CLIPModel
from transformers.masking_utils import create_causal_mask
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

if TYPE_CHECKING:
    from .modeling_coop import PromptLearner

MIN_SHARED_PREFIX = 4
"""Shortest shared prefix (in tokens) for which `encode_prompts` takes the shared-prefix path. Measured on
ViT-B/32 and TinyCLIP (CPU, fp32, forward + backward, 10-1000 classes): [SOS] alone (front position,
class-specific context) is slower than the plain pass; from about 4 shared tokens on the shared-prefix pass is
faster (benchmarks/README.md)."""


def encode_prompts(
    clip: CLIPModel,
    prompt_learner: PromptLearner,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    min_shared_prefix: int = MIN_SHARED_PREFIX,
) -> torch.Tensor:
    """[classes, projection_dim] text features of the prompts of `prompt_learner`, as `CLIPModel.get_text_features`.

    Takes the shared-prefix path when the prompts share at least `min_shared_prefix` leading positions (by their
    token layout), otherwise the plain path. `chunk_size` encodes that many classes at a time; `checkpoint`
    recomputes each layer's activations in the backward pass instead of keeping them (less memory for many
    classes, about one more forward pass of time). Neither changes the result.
    """
    prompt_embeds = prompt_learner(clip.text_model.embeddings.token_embedding)
    prefix_length = shared_prefix_length(
        prompt_learner.input_ids,
        prompt_learner.context_positions,
        prompt_learner.eot_positions,
        class_specific=prompt_learner.class_specific,
    )
    options = dict(chunk_size=chunk_size, checkpoint=checkpoint)
    if prefix_length >= min_shared_prefix:
        return encode_shared_prefix(clip, prompt_embeds, prompt_learner.eot_positions, prefix_length, **options)
    return encode_plain(clip, prompt_embeds, prompt_learner.eot_positions, **options)


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


def encode_plain(
    clip: CLIPModel,
    prompt_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """[classes, projection_dim] text features of token embeddings `prompt_embeds` [classes, length, width]:
    position embeddings, the causal encoder, the final layer norm at `eot_positions`, the text projection."""
    text_model = clip.text_model
    pooled = []
    for rows in _class_chunks(len(prompt_embeds), chunk_size):
        hidden = text_model.embeddings(inputs_embeds=prompt_embeds[rows])
        causal_mask = create_causal_mask(
            config=text_model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None
        )
        for layer in text_model.encoder.layers:
            hidden = _maybe_checkpoint(checkpoint, layer, hidden, causal_mask, is_causal=True)
        pooled.append(hidden[torch.arange(len(hidden), device=hidden.device), eot_positions[rows]])
    return clip.text_projection(text_model.final_layer_norm(torch.cat(pooled)))


def encode_shared_prefix(
    clip: CLIPModel,
    prompt_embeds: torch.Tensor,
    eot_positions: torch.Tensor,
    prefix_length: int,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Same result as `encode_plain` for prompts whose first `prefix_length` embeddings are the same in every row.

    The prefix is read from row 0 and encoded once; the remaining tokens of each class attend to the prefix keys
    and values of each layer and, causally, to their own. Every EOT position must lie at or after the prefix.
    """
    text_model = clip.text_model
    embeddings = text_model.embeddings
    length = prompt_embeds.shape[1]
    if not 0 < prefix_length <= int(eot_positions.min()):
        raise ValueError(
            f"prefix_length={prefix_length} must be >= 1 and at most the first end-of-text position "
            f"({int(eot_positions.min())})."
        )
    prefix = embeddings(inputs_embeds=prompt_embeds[:1, :prefix_length])
    prefix_keys_values = []
    for layer in text_model.encoder.layers:
        prefix, key, value = _prefix_layer(layer, prefix)
        prefix_keys_values.append((key, value))

    suffix_length = length - prefix_length
    # Suffix token i sees every prefix token and suffix tokens 0..i of its own prompt.
    mask = torch.ones(suffix_length, length, dtype=torch.bool, device=prompt_embeds.device).tril(prefix_length)
    suffix_positions = embeddings.position_ids[:, prefix_length:length]
    pooled = []
    for rows in _class_chunks(len(prompt_embeds), chunk_size):
        hidden = embeddings(inputs_embeds=prompt_embeds[rows, prefix_length:], position_ids=suffix_positions)
        for layer, (key, value) in zip(text_model.encoder.layers, prefix_keys_values):
            hidden = _maybe_checkpoint(checkpoint, _suffix_layer, layer, hidden, key, value, mask)
        eot = eot_positions[rows] - prefix_length
        pooled.append(hidden[torch.arange(len(hidden), device=hidden.device), eot])
    return clip.text_projection(text_model.final_layer_norm(torch.cat(pooled)))


def _class_chunks(num_classes: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of classes or None, got {chunk_size}.")
    step = chunk_size or num_classes
    return [slice(start, start + step) for start in range(0, num_classes, step)]


def _maybe_checkpoint(checkpoint: bool, function, *args, **kwargs) -> torch.Tensor:
    if checkpoint and torch.is_grad_enabled():
        return checkpoint_function(function, *args, use_reentrant=False, **kwargs)
    return function(*args, **kwargs)


def _split_heads(layer: CLIPEncoderLayer, states: torch.Tensor) -> torch.Tensor:
    """[batch, tokens, width] -> [batch, heads, tokens, head_dim]."""
    attention = layer.self_attn
    return states.view(*states.shape[:2], attention.num_heads, attention.head_dim).transpose(1, 2)


def _queries_keys_values(layer: CLIPEncoderLayer, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    normed = layer.layer_norm1(hidden)
    attention = layer.self_attn
    return tuple(_split_heads(layer, proj(normed)) for proj in (attention.q_proj, attention.k_proj, attention.v_proj))


def _finish_layer(layer: CLIPEncoderLayer, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Attention output projection and residual, then the MLP block and residual."""
    attended = attended.transpose(1, 2).reshape(hidden.shape)
    hidden = hidden + layer.self_attn.out_proj(attended)
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def _prefix_layer(layer: CLIPEncoderLayer, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One causal layer over the shared prefix; also returns its keys and values for the suffixes."""
    query, key, value = _queries_keys_values(layer, hidden)
    attended = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=layer.self_attn.scale)
    return _finish_layer(layer, hidden, attended), key, value


def _suffix_layer(
    layer: CLIPEncoderLayer,
    hidden: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """One layer over the per-class suffixes, attending to the shared prefix and causally to themselves."""
    query, key, value = _queries_keys_values(layer, hidden)
    batch = hidden.shape[0]
    key = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=layer.self_attn.scale)
    return _finish_layer(layer, hidden, attended)

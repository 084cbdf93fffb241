"""open_clip checkpoints (`pip install "coop-hf[open-clip]"`): OpenAI's RN50 / ViT CLIPs and LAION's, as open_clip
builds them, wrapped in a small `transformers.PreTrainedModel` so that every method takes them like any backbone.

A checkpoint is given as
- `open_clip:<architecture>/<pretrained tag>`, open_clip's own names (`open_clip:RN50/openai`,
  `open_clip:ViT-B-32/laion2b_s34b_b79k`; `open_clip.list_pretrained()` lists them);
- `hf-hub:<org>/<name>` or `local-dir:<folder>`, open_clip's schemas, or simply a local folder or Hub id that holds
  `open_clip_config.json` and `open_clip_model.safetensors` (and no transformers `config.json` of a supported family:
  then that one is loaded).

[`OpenCLIPModel`] holds open_clip's own modules, re-laid out without copies: `text_model` (token and position
embeddings, open_clip's `ResidualAttentionBlock`s, `ln_final`, the text projection and the causal mask) and
`vision_model` (open_clip's `VisionTransformer` or `ModifiedResNet`, untouched), plus `logit_scale`. The tokenizer is
open_clip's CLIP BPE (the vocabulary bundled with the package, offline) as a transformers `CLIPTokenizer`, the image
processor a `CLIPImageProcessor` with the checkpoint's size, mean and std.

[`OpenCLIPBackbone`] reads the layers through thin views that expose what `coop_hf.text_encoding` asks of a CLIP
layer (`self_attn.q_proj/k_proj/v_proj/out_proj`, `layer_norm1/2`, `mlp`): the query, key and value projections are
slices of `nn.MultiheadAttention`'s packed `in_proj_weight`, so the shared-prefix fast path runs on open_clip text
towers too. Per-layer vision hooks (deep vision prompts) exist on ViT image towers only: a ResNet tower ends in
attention pooling over its feature map.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPImageProcessor, CLIPTokenizer, PretrainedConfig, PreTrainedModel
from transformers.image_utils import PILImageResampling

from .base import Backbone, LayerHook
from .frozen_resnet import trace_frozen_resnet

OPEN_CLIP_PREFIX = "open_clip:"
"""`open_clip:<architecture>/<pretrained tag>`: a checkpoint by open_clip's own names."""
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
RESAMPLING = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR}


def _require_open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            'open_clip checkpoints need the open_clip package: pip install "coop-hf[open-clip]" (open_clip_torch, '
            "with torchvision)."
        ) from error
    return open_clip


# -- config and model -----------------------------------------------------------------------------------------------


class OpenCLIPConfig(PretrainedConfig):
    """An open_clip model: open_clip's model config (`model_cfg`: embed_dim, vision_cfg, text_cfg, ...), its image
    preprocessing (`preprocess_cfg`: size, mean, std, interpolation) and where it came from (`open_clip_source`).

    `text_config` and `vision_config` are read from `model_cfg` (widths, layers, context length), in the names of
    transformers' CLIP configs; `projection_dim` is open_clip's `embed_dim`.
    """

    model_type = "open_clip"

    def __init__(
        self,
        model_cfg: dict[str, Any] | None = None,
        preprocess_cfg: dict[str, Any] | None = None,
        open_clip_source: str | None = None,
        **kwargs,
    ):
        kwargs.pop("text_config", None)  # derived from model_cfg
        kwargs.pop("vision_config", None)
        kwargs.pop("projection_dim", None)
        super().__init__(**kwargs)
        self.model_cfg = dict(model_cfg or {})
        self.preprocess_cfg = dict(preprocess_cfg or {})
        self.open_clip_source = open_clip_source
        text_cfg = self.model_cfg.get("text_cfg", {})
        vision_cfg = self.model_cfg.get("vision_cfg", {})
        vision_width = vision_cfg.get("width", 768)
        resnet = isinstance(vision_cfg.get("layers"), list | tuple)
        self.projection_dim = self.model_cfg.get("embed_dim", 512)
        self.text_config = PretrainedConfig(
            hidden_size=text_cfg.get("width", 512),
            num_hidden_layers=text_cfg.get("layers", 12),
            num_attention_heads=text_cfg.get("heads", 8),
            max_position_embeddings=text_cfg.get("context_length", 77),
            vocab_size=text_cfg.get("vocab_size", 49408),
        )
        self.vision_config = PretrainedConfig(
            hidden_size=vision_width * 32 if resnet else vision_width,
            image_size=vision_cfg.get("image_size", 224),
            resnet=resnet,
        )

    @property
    def architecture(self) -> str:
        """The open_clip architecture name, e.g. "RN50" (from the source), or "open_clip" when unknown."""
        source = self.open_clip_source or ""
        if source.startswith(OPEN_CLIP_PREFIX):
            return source[len(OPEN_CLIP_PREFIX) :].split("/")[0]
        return source.rstrip("/").split("/")[-1] or "open_clip"


class OpenCLIPTextEmbeddings(nn.Module):
    """open_clip's token embedding and learned position embeddings, called as transformers' CLIP text embeddings:
    `embeddings(inputs_embeds=..., position_ids=...)`."""

    def __init__(self, token_embedding: nn.Embedding, positional_embedding: nn.Parameter):
        super().__init__()
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        positions = torch.arange(positional_embedding.shape[0]).unsqueeze(0)
        self.register_buffer("position_ids", positions, persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.token_embedding(input_ids)
        if position_ids is None:
            position_ids = self.position_ids[:, : inputs_embeds.shape[1]]
        return inputs_embeds + self.positional_embedding[position_ids].to(inputs_embeds.dtype)


class _PackedProjection:
    """One of q, k, v of `nn.MultiheadAttention`'s packed input projection, as a linear map."""

    def __init__(self, attention: nn.MultiheadAttention, index: int):
        self.attention, self.index = attention, index

    def __call__(self, states: torch.Tensor) -> torch.Tensor:
        width = self.attention.embed_dim
        rows = slice(self.index * width, (self.index + 1) * width)
        bias = self.attention.in_proj_bias
        return F.linear(states, self.attention.in_proj_weight[rows], None if bias is None else bias[rows])


class SplitMultiheadAttention(nn.Module):
    """An `nn.MultiheadAttention` (self-attention, as open_clip's blocks call it) with its packed input projection
    split into linear `q_proj`, `k_proj`, `v_proj`, and `out_proj`: the same weights, copied, and the same output, as
    the official CLIP-LoRA splits OpenAI's (`PlainMultiheadAttentionLoRA`) so that the projections can be updated."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if attention.dropout or not attention._qkv_same_embed_dim:
            raise ValueError(
                "SplitMultiheadAttention splits self-attention without dropout, as open_clip's blocks hold."
            )
        width, bias = attention.embed_dim, attention.in_proj_bias is not None
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.batch_first = attention.batch_first
        like = {"device": attention.in_proj_weight.device, "dtype": attention.in_proj_weight.dtype}
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width, bias=bias, **like) for _ in range(3))
        self.out_proj = nn.Linear(width, width, bias=attention.out_proj.bias is not None, **like)
        with torch.no_grad():
            for index, projection in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                rows = slice(index * width, (index + 1) * width)
                projection.weight.copy_(attention.in_proj_weight[rows])
                if bias:
                    projection.bias.copy_(attention.in_proj_bias[rows])
        self.out_proj.load_state_dict(attention.out_proj.state_dict())

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """(attention output, None), as `nn.MultiheadAttention(..., need_weights=False)` returns."""
        if key_padding_mask is not None or need_weights:
            raise ValueError("SplitMultiheadAttention takes an attention mask only, as open_clip's blocks pass it.")
        if not self.batch_first:
            query, key, value = (states.transpose(0, 1) for states in (query, key, value))
        batch, length, width = query.shape
        if attn_mask is not None and attn_mask.dtype == torch.bool:  # True masks out, as in nn.MultiheadAttention
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                attn_mask, float("-inf")
            )
        if attn_mask is not None and attn_mask.dim() == 3:  # [batch * heads, length, length]
            attn_mask = attn_mask.view(batch, self.num_heads, length, -1)

        def heads(states: torch.Tensor) -> torch.Tensor:
            return states.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value)), attn_mask=attn_mask
        )
        output = self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))
        return (output if self.batch_first else output.transpose(0, 1)), None


class _AttentionView:
    """An open_clip block's attention in the names of transformers' `CLIPAttention` (what the shared-prefix path
    reads): q/k/v projections, the output projection (followed by the block's layer scale), heads and scale."""

    def __init__(self, block: nn.Module):
        attention: nn.MultiheadAttention | SplitMultiheadAttention = block.attn
        if isinstance(attention, SplitMultiheadAttention):
            self.q_proj, self.k_proj, self.v_proj = attention.q_proj, attention.k_proj, attention.v_proj
        else:
            self.q_proj, self.k_proj, self.v_proj = (_PackedProjection(attention, index) for index in range(3))
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.scale = self.head_dim**-0.5
        self._out_proj, self._layer_scale = attention.out_proj, block.ls_1

    def out_proj(self, states: torch.Tensor) -> torch.Tensor:
        return self._layer_scale(self._out_proj(states))


class OpenCLIPTextLayer(nn.Module):
    """One open_clip `ResidualAttentionBlock` of the text tower (`block`, run as it is), with the views of a
    transformers CLIP layer (`self_attn`, `layer_norm1`, `layer_norm2`, `mlp`) for the shared-prefix fast path."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    @property
    def self_attn(self) -> _AttentionView:
        return _AttentionView(self.block)

    @property
    def layer_norm1(self) -> nn.Module:
        return self.block.ln_1

    @property
    def layer_norm2(self) -> nn.Module:
        return self.block.ln_2

    def mlp(self, states: torch.Tensor) -> torch.Tensor:
        return self.block.ls_2(self.block.mlp(states))

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        return self.block(hidden_states, attn_mask=attention_mask)


class OpenCLIPTextModel(nn.Module):
    """open_clip's text tower (its modules, not copies): embeddings, blocks, `ln_final`, projection, causal mask."""

    def __init__(self, open_clip_model: nn.Module):
        super().__init__()
        text = getattr(open_clip_model, "text", open_clip_model)  # CustomTextCLIP keeps it in .text
        self.embeddings = OpenCLIPTextEmbeddings(text.token_embedding, text.positional_embedding)
        self.layers = nn.ModuleList(OpenCLIPTextLayer(block) for block in text.transformer.resblocks)
        self.final_layer_norm = text.ln_final
        projection = text.text_projection
        if isinstance(projection, nn.Parameter):
            self.projection_matrix = projection
            self.projection = None
        else:
            self.projection_matrix = None
            self.projection = projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The final layer norm and the text projection of pooled hidden states [..., width]."""
        features = self.final_layer_norm(pooled)
        if self.projection_matrix is not None:
            return features @ self.projection_matrix
        return features if self.projection is None else self.projection(features)

    def forward(self, input_ids: torch.Tensor, eos_token_id: int, **kwargs) -> torch.Tensor:
        """[texts, embed_dim] text features of token ids (pooled at the first end-of-text token)."""
        hidden = self.embeddings(input_ids=input_ids)
        length = hidden.shape[1]
        mask = self.attn_mask[:length, :length].to(hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), (input_ids == eos_token_id).int().argmax(-1)]
        return self.project(pooled)


class OpenCLIPModel(PreTrainedModel):
    """An open_clip CLIP as a transformers model: `text_model`, `vision_model` (open_clip's visual tower),
    `logit_scale` (and `logit_bias` where open_clip has one). Built from a loaded open_clip model
    ([`OpenCLIPModel.from_open_clip_model`]), an open_clip checkpoint ([`load_open_clip`]) or, with random weights,
    from its config (`OpenCLIPModel(config)`); `save_pretrained` / `from_pretrained` work as for any model.

    Example:

    ```python
    >>> from coop_hf import CoOpModel

    >>> model = CoOpModel.from_clip("open_clip:RN50/openai", ["daisy", "rose"], ctx_init="a photo of a")
    ```
    """

    config_class = OpenCLIPConfig
    base_model_prefix = "open_clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")

    def __init__(self, config: OpenCLIPConfig, open_clip_model: nn.Module | None = None):
        super().__init__(config)
        if open_clip_model is None:
            open_clip_model = build_open_clip(config.model_cfg)
        check_open_clip_model(open_clip_model)
        self.text_model = OpenCLIPTextModel(open_clip_model)
        self.vision_model = open_clip_model.visual
        self.logit_scale = open_clip_model.logit_scale
        self.logit_bias = getattr(open_clip_model, "logit_bias", None)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        return  # open_clip initialised (or loaded) every weight

    def _frozen_resnet(self) -> nn.Module:
        """The frozen ResNet tower rewritten for inference ([`trace_frozen_resnet`]), traced again whenever one of
        its tensors was replaced (loaded weights, a new parameter); the tower itself where it cannot be traced."""
        tower = self.vision_model
        tensors = tuple(map(id, itertools.chain(tower.parameters(), tower.buffers())))
        if getattr(self, "_frozen", (None, None))[0] != tensors:
            # A tuple, so not registered as a submodule: the traced tower shares the tower's modules and stays out
            # of the state dict.
            self._frozen = (tensors, trace_frozen_resnet(tower) or tower)
        return self._frozen[1]

    @classmethod
    def from_open_clip_model(
        cls,
        open_clip_model: nn.Module,
        model_cfg: dict[str, Any],
        *,
        preprocess_cfg: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> OpenCLIPModel:
        """Wrap a loaded open_clip model (its modules are shared, not copied) built from `model_cfg` (open_clip's
        model config); `source` is what loads it again (e.g. "open_clip:RN50/openai", a folder)."""
        if preprocess_cfg is None:
            preprocess_cfg = dict(getattr(open_clip_model.visual, "preprocess_cfg", None) or {})
        config = OpenCLIPConfig(model_cfg=model_cfg, preprocess_cfg=preprocess_cfg, open_clip_source=source)
        model = cls(config, open_clip_model=open_clip_model)
        model.name_or_path = source or ""
        return model.eval()

    def get_text_features(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """[texts, embed_dim] text features of token ids from [`open_clip_tokenizer`]."""
        return self.text_model(input_ids, eos_token_id=self.config.text_config.vocab_size - 1)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """[images, embed_dim] image features (open_clip's `encode_image`). A ResNet tower is fed channels-last and,
        when frozen and in eval mode, runs rewritten for inference ([`trace_frozen_resnet`]: BatchNorms folded into
        the convolutions, residual sums in place, only the pooled token attended): about 1.7x faster on a CPU
        together (benchmarks/README.md), the same features to float rounding, the weights untouched."""
        tower = self.vision_model
        if self.config.vision_config.resnet:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            if not tower.training and not any(parameter.requires_grad for parameter in tower.parameters()):
                tower = self._frozen_resnet()
        features = tower(pixel_values)
        return features[0] if isinstance(features, tuple) else features


def build_open_clip(model_cfg: dict[str, Any]) -> nn.Module:
    """An open_clip model with random weights from its model config (as `open_clip.create_model` builds it)."""
    open_clip = _require_open_clip()
    model_cfg = dict(model_cfg)
    custom_text = model_cfg.pop("custom_text", False) or "hf_model_name" in model_cfg.get("text_cfg", {})
    if "multimodal_cfg" in model_cfg:
        raise ValueError("open_clip's CoCa models are not supported backbones: give a CLIP model.")
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return model_class(**model_cfg)


def check_open_clip_model(model: nn.Module) -> None:
    """Refuse, in one line, open_clip models whose text tower is not CLIP's causal transformer."""
    text = getattr(model, "text", model)
    blocks = getattr(getattr(text, "transformer", None), "resblocks", None)
    reason = None
    if blocks is None or not hasattr(text, "token_embedding"):
        reason = "its text tower is not open_clip's TextTransformer (a Hugging Face text model?)"
    elif getattr(text, "attn_mask", None) is None:
        reason = "its text tower is bidirectional (SigLIP-style)"
    elif getattr(text, "cls_emb", None) is not None:
        reason = "its text tower appends a class token (CoCa)"
    elif getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax")) not in ("argmax", "eos"):
        reason = "its text tower does not pool at the end-of-text token"
    elif any(type(block).__name__ != "ResidualAttentionBlock" or not block.attn.batch_first for block in blocks):
        reason = "its text blocks are not the standard batch-first ResidualAttentionBlock"
    if reason:
        raise ValueError(
            f"This open_clip model cannot be a coop-hf backbone: {reason}. coop-hf runs open_clip CLIP models "
            "(RN50, ViT-B-32, ...); SigLIP checkpoints load as transformers' SiglipModel."
        )


# -- loading --------------------------------------------------------------------------------------------------------


def is_open_clip_source(source: Any) -> bool:
    """Whether `source` names an open_clip checkpoint: `open_clip:<arch>/<tag>`, `hf-hub:` / `local-dir:`, or a
    local folder with `open_clip_config.json` and no transformers config of a supported family."""
    if not isinstance(source, str | os.PathLike):
        return False
    text = str(source)
    if text.startswith((OPEN_CLIP_PREFIX, *OPEN_CLIP_SCHEMAS)):
        return True
    folder = Path(os.path.expanduser(text))
    return folder.is_dir() and (folder / OPEN_CLIP_CONFIG_NAME).is_file() and not _has_supported_config(folder)


def _has_supported_config(folder: Path) -> bool:
    from . import BACKBONES

    config = folder / "config.json"
    if not config.is_file():
        return False
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return model_type in BACKBONES and model_type != OpenCLIPConfig.model_type


def hub_open_clip_config(repo_id: str, **download) -> str | None:
    """The path of `open_clip_config.json` in a Hub repository (downloaded or cached), or None if it has none."""
    from transformers.utils import cached_file

    try:
        return cached_file(repo_id, OPEN_CLIP_CONFIG_NAME, _raise_exceptions_for_missing_entries=False, **download)
    except (OSError, ValueError):
        return None


def is_open_clip_hub_repo(source: Any, **download) -> bool:
    """Whether `source` is a Hub id whose repository holds open_clip's files and no transformers config of a
    supported family (asked only of Hub ids, never of local folders)."""
    from transformers.utils import cached_file

    if not isinstance(source, str) or os.path.exists(os.path.expanduser(source)) or source.count("/") != 1:
        return False
    try:
        config = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False, **download)
    except (OSError, ValueError):
        return False
    if config is not None and _has_supported_config(Path(config).parent):
        return False
    return hub_open_clip_config(source, **download) is not None


def load_open_clip(source: str | os.PathLike, *, cache_dir: str | None = None, **ignored) -> OpenCLIPModel:
    """An open_clip checkpoint as an [`OpenCLIPModel`], in eval mode: `open_clip:<arch>/<tag>`, `hf-hub:<id>`,
    `local-dir:<folder>` or a folder / Hub id holding `open_clip_config.json` (+ `open_clip_model.safetensors`)."""
    open_clip = _require_open_clip()
    text = str(source)
    if text.startswith(OPEN_CLIP_PREFIX):
        name, _, tag = text[len(OPEN_CLIP_PREFIX) :].partition("/")
        if not name or not tag:
            raise ValueError(
                f"{text!r}: name an open_clip checkpoint as open_clip:<architecture>/<pretrained tag>, e.g. "
                "open_clip:RN50/openai (open_clip.list_pretrained() lists them)."
            )
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(f"{text!r}: open_clip has no architecture {name!r} (open_clip.list_models()).")
        # OpenAI's (and other) weights were trained with QuickGELU, which the plain architecture names (RN50) lack:
        # open_clip builds them with nn.GELU and only warns (text features off by 5e-2); build what the tag needs.
        quick_gelu = bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))
        force_quick_gelu = quick_gelu and not model_cfg.get("quick_gelu", False)
        model_cfg = {**model_cfg, "quick_gelu": True} if force_quick_gelu else model_cfg
        model = _create(open_clip, text, name, pretrained=tag, cache_dir=cache_dir, force_quick_gelu=force_quick_gelu)
    else:
        if not text.startswith(OPEN_CLIP_SCHEMAS):
            folder = Path(os.path.expanduser(text))
            text = f"local-dir:{folder}" if folder.is_dir() else f"hf-hub:{text}"
        schema, _, identifier = text.partition(":")
        if schema == "local-dir":
            config_path = Path(identifier) / OPEN_CLIP_CONFIG_NAME
        else:
            config_path = hub_open_clip_config(identifier, cache_dir=cache_dir)
        if config_path is None or not Path(config_path).is_file():
            if schema == "hf-hub" and huggingface_hub.constants.HF_HUB_OFFLINE:
                raise OSError(f"{source!s} is not in the Hugging Face cache, and the Hub is offline (HF_HUB_OFFLINE).")
            raise OSError(f"{source!s} holds no {OPEN_CLIP_CONFIG_NAME}: it is not an open_clip checkpoint.")
        model_cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))["model_cfg"]
        model = _create(open_clip, str(source), text, cache_dir=cache_dir)
    return OpenCLIPModel.from_open_clip_model(model, model_cfg, source=str(source))


def _create(open_clip, source: str, *args, **kwargs) -> nn.Module:
    """`open_clip.create_model`, its download and lookup failures as an `OSError` naming the source."""
    try:
        return open_clip.create_model(*args, **kwargs)
    except (RuntimeError, FileNotFoundError) as error:
        raise OSError(f"open_clip could not load {source!r}: {error}") from error


@functools.cache
def _bundled_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """open_clip's bundled CLIP BPE vocabulary and merges, as `SimpleTokenizer` builds them."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    characters = list(bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def open_clip_tokenizer(model: OpenCLIPModel | None = None) -> CLIPTokenizer:
    """open_clip's CLIP BPE tokenizer (the vocabulary bundled with open_clip, offline) as a transformers
    `CLIPTokenizer`: [SOS] text [EOS], the same ids as `open_clip.tokenize` (which pads with 0 where this pads with
    [EOS]; both pool at the first [EOS])."""
    _require_open_clip()
    vocab, merges = _bundled_bpe()
    length = model.config.text_config.max_position_embeddings if model is not None else 77
    text_cfg = model.config.model_cfg.get("text_cfg", {}) if model is not None else {}
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("vocab_size", 49408) != len(vocab):
        raise ValueError("This open_clip model does not use CLIP's BPE vocabulary: it is not supported.")
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=length)


def open_clip_image_processor(model: OpenCLIPModel) -> CLIPImageProcessor:
    """A `CLIPImageProcessor` with the checkpoint's preprocessing (size, mean, std, interpolation): resize the
    shorter side, centre crop, normalise, as open_clip's `image_transform` for evaluation."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    preprocess = model.config.preprocess_cfg
    size = preprocess.get("size", model.config.vision_config.image_size)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return CLIPImageProcessor(
        size={"shortest_edge": min(height, width)},
        crop_size={"height": height, "width": width},
        image_mean=list(preprocess.get("mean", OPENAI_DATASET_MEAN)),
        image_std=list(preprocess.get("std", OPENAI_DATASET_STD)),
        resample=RESAMPLING.get(preprocess.get("interpolation", "bicubic"), PILImageResampling.BICUBIC),
    )


# -- the backbone ---------------------------------------------------------------------------------------------------


class OpenCLIPBackbone(Backbone):
    """open_clip CLIPs: CLIP's prompt layout ([SOS] prompt [EOS], 77 tokens, causal, pooled at the first [EOS]), the
    text tower run block by block (the shared-prefix fast path through [`OpenCLIPTextLayer`]'s views), images
    through open_clip's own visual tower. A ViT tower takes the vision hooks of deep prompts (before `ln_pre`, before
    each block); a ResNet tower (attention pooling) takes none."""

    family = "open_clip"
    display_name = "OpenCLIP"
    model_types = ("open_clip",)
    text_projection_name = None
    image_projection_name = None

    def __init__(self, model: PreTrainedModel):
        super().__init__(model)
        tower = "ResNet" if self.resnet else "ViT"
        self.display_name = f"OpenCLIP {model.config.architecture} ({tower} image tower)"

    @property
    def resnet(self) -> bool:
        return not hasattr(self.model.vision_model, "transformer")

    @property
    def vision_pools_class_token(self) -> bool:
        """ViT towers pooled at the class token (open_clip's default "tok" pooling, no attention pooler)."""
        visual = self.model.vision_model
        return not self.resnet and getattr(visual, "pool_type", "tok") == "tok" and visual.attn_pool is None

    def describe(self) -> str:
        return f"{self.display_name}, text width {self.text_width}, embedding width {self.embed_dim}"

    # -- text ---

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.text_model.layers

    def linear_attention(self, layer: nn.Module) -> str:
        """A text layer's or ViT block's attention, split where `nn.MultiheadAttention` packs q, k and v
        (`SplitMultiheadAttention`): "block.attn" or "attn"."""
        block = layer.block if isinstance(layer, OpenCLIPTextLayer) else layer
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SplitMultiheadAttention(block.attn)
        return "block.attn" if block is not layer else "attn"

    def text_attention_mask(
        self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """open_clip's own additive causal mask [length, length]."""
        length = hidden.shape[1]
        return self.text_model.attn_mask[:length, :length].to(hidden.dtype)

    def project_text(self, pooled: torch.Tensor, modules: dict[str, nn.Module] | None = None) -> torch.Tensor:
        return (modules or self.text_modules())["text_model"].project(pooled)

    def text_features(
        self, inputs: dict[str, torch.Tensor], modules: dict[str, nn.Module] | None = None
    ) -> torch.Tensor:
        text_model = (modules or self.text_modules())["text_model"]
        return text_model(inputs["input_ids"], eos_token_id=self.text_config.vocab_size - 1)

    # -- images ---

    @property
    def vision_layers(self) -> nn.ModuleList:
        """The ViT tower's blocks; none in a ResNet tower."""
        return nn.ModuleList() if self.resnet else self.vision_model.transformer.resblocks

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)

    vision_layer_input = "q_x"  # open_clip's ResidualAttentionBlock

    def _hook_vision_embeddings(self, embeddings_hook: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        # the patch + class + position embeddings, before ln_pre
        return self.vision_model.ln_pre.register_forward_pre_hook(lambda module, args: (embeddings_hook(args[0]),))

    @contextmanager
    def _vision_hooks(
        self, embeddings_hook: Callable[[torch.Tensor], torch.Tensor] | None, layer_hook: LayerHook | None
    ) -> Iterator[None]:
        if (embeddings_hook or layer_hook) and self.resnet:
            raise ValueError(
                f"{self.display_name} has no per-layer vision hooks (convolutions, then attention pooling): deep "
                "vision prompts need a ViT image tower."
            )
        with super()._vision_hooks(embeddings_hook, layer_hook):
            yield

    @property
    def logit_bias(self) -> torch.Tensor | None:
        return self.model.logit_bias

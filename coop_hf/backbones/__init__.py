"""The contrastive backbones prompt methods run on, one module per family, chosen by `config.model_type`.

```python
>>> from coop_hf.backbones import backbone_for, load_backbone

>>> model, tokenizer = load_backbone("google/siglip-base-patch16-224")
>>> backbone = backbone_for(model)  # SiglipBackbone: padded prompts, last-token pooling, logit bias
>>> model, tokenizer = load_backbone("open_clip:RN50/openai")  # open_clip checkpoints: `coop_hf.backbones.openclip`
```
"""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub.errors import HFValidationError
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import Backbone, LayerHook
from .clip import ClipBackbone
from .metaclip2 import MetaClip2Backbone
from .openclip import (
    OpenCLIPBackbone,
    OpenCLIPConfig,
    OpenCLIPModel,
    is_open_clip_hub_repo,
    is_open_clip_source,
    load_open_clip,
    open_clip_image_processor,
    open_clip_tokenizer,
)
from .siglip import Siglip2Backbone, SiglipBackbone

BACKBONES: dict[str, type[Backbone]] = {
    model_type: family
    for family in (ClipBackbone, MetaClip2Backbone, SiglipBackbone, Siglip2Backbone, OpenCLIPBackbone)
    for model_type in family.model_types
}
"""Backbone family by the `model_type` of the transformers config it loads."""

DOWNLOAD_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "token", "revision")


def _unsupported(model_type: str) -> ValueError:
    return ValueError(
        f"model_type {model_type!r} is not a supported backbone: coop-hf runs on {', '.join(BACKBONES)} "
        "(CLIP, MetaCLIP 2, SigLIP, SigLIP 2, open_clip). Choose such a checkpoint with --model_name_or_path / "
        "clip_model=."
    )


def backbone_for(model: PreTrainedModel | Backbone) -> Backbone:
    """The [`Backbone`] of a loaded contrastive model (a `Backbone` is returned as it is)."""
    if isinstance(model, Backbone):
        return model
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return backbone_class(str(model_type) if model_type else type(model).__name__)(model)


def family_name(family: str | None) -> str:
    """How tables and cards name a family ("SigLIP"); "CLIP" for records that name none."""
    return BACKBONES[family].display_name if family in BACKBONES else "CLIP"


def backbone_class(model_type: str) -> type[Backbone]:
    """The family that loads `model_type`, or an error naming the supported ones and the flag."""
    if model_type not in BACKBONES:
        raise _unsupported(model_type)
    return BACKBONES[model_type]


def load_backbone(
    model: PreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A contrastive model given as a loaded model or a Hub id / local path (its family checked before the weights
    load), and its tokenizer (loaded from the same place when not given)."""
    download = {key: value for key, value in from_pretrained_kwargs.items() if key in DOWNLOAD_KWARGS}
    if not isinstance(model, PreTrainedModel):
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(
                f"The backbone must be a transformers model (CLIPModel, SiglipModel, ...) or a Hub id / local path, "
                f"got {type(model).__name__}."
            )
        try:
            if is_open_clip_source(model) or is_open_clip_hub_repo(model, **download):
                model = load_open_clip(model, **download)
            else:
                backbone_class(AutoConfig.from_pretrained(model, **download).model_type)
                model = AutoModel.from_pretrained(model, **from_pretrained_kwargs)
        except (OSError, HFValidationError) as error:  # a missing folder, or a relative path read as a Hub id
            raise OSError(
                f"Could not load the base CLIP {str(model)!r}: {error}\nPass clip_model= (--model_name_or_path) a "
                "loaded model or a local path to it (offline, a Hub id must already be in the Hugging Face cache)."
            ) from error
    else:
        backbone_for(model)  # refuses an unsupported family
    if tokenizer is None and isinstance(model, OpenCLIPModel):
        tokenizer = open_clip_tokenizer(model)  # open_clip's bundled CLIP BPE
    if tokenizer is None:
        if not model.name_or_path:
            raise ValueError(
                f"This {type(model).__name__} was not loaded from a checkpoint, so its tokenizer cannot be found: "
                "pass tokenizer=."
            )
        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, **download)
    return model, tokenizer


def default_image_processor(model: PreTrainedModel) -> Any | None:
    """The image processor a backbone carries in its own config (open_clip's preprocessing), or None (transformers
    checkpoints save theirs beside the weights)."""
    return open_clip_image_processor(model) if isinstance(model, OpenCLIPModel) else None


AutoConfig.register(OpenCLIPConfig.model_type, OpenCLIPConfig, exist_ok=True)
AutoModel.register(OpenCLIPConfig, OpenCLIPModel, exist_ok=True)

__all__ = [
    "BACKBONES",
    "Backbone",
    "LayerHook",
    "OpenCLIPConfig",
    "OpenCLIPModel",
    "backbone_class",
    "backbone_for",
    "default_image_processor",
    "family_name",
    "load_backbone",
]

"""What a prompt method may ask of a contrastive vision-language backbone, whatever its family.

A [`Backbone`] wraps a loaded transformers model (`CLIPModel`, `SiglipModel`, ...) and answers, for its family:
- the prompt's token layout: the sequence length, whether prompts are padded to it, where the text feature is
  pooled ([`Backbone.pool_positions`]);
- the text tower's parts, to run it from input embeddings layer by layer (`text_embeddings`, `text_layers`,
  `text_attention_mask`, `project_text`; `coop_hf.text_encoding` runs them, its plain path with a per-layer hook
  for methods that insert or replace tokens);
- the image tower ([`Backbone.image_features`]), with the same kind of hook;
- the similarity head ([`Backbone.logits`]): scale, and bias where the family has one;
- whether the text tower is causal, which decides whether the shared-prefix fast path is exact.

Methods never name a backbone class: they ask the backbone. A family is one subclass, registered by its
`model_types` in `coop_hf.backbones`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]
"""`hook(layer_index, hidden_states) -> hidden_states`, called before each encoder layer: where deep prompts insert
or replace tokens. The tokens it returns are what the layer sees."""


class Backbone:
    """One family of contrastive backbones, around a loaded model (`backbone.model`).

    The defaults here describe CLIP's layout (causal text tower, pooled at the first end-of-text token, a text and a
    visual projection, a scale and no bias); each family overrides what differs.
    """

    family: ClassVar[str] = ""
    """Name recorded in a saved prompt's config (`backbone_family`): a prompt loads only onto its own family."""
    display_name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    """The `config.model_type` values this family loads."""
    causal_text: ClassVar[bool] = True
    """Whether each text token attends only to the tokens before it: then what follows the pooled token cannot change
    it, and a prefix that all prompts share can be encoded once (the fast paths of `coop_hf.text_encoding`)."""
    pad_prompts: ClassVar[bool] = False
    """Whether every prompt is padded to the full sequence length, as the family was trained (SigLIP: 64 tokens,
    every one attended)."""
    text_projection_name: ClassVar[str | None] = "text_projection"
    """The model's text projection module, when it is not part of the text tower."""
    image_projection_name: ClassVar[str | None] = "visual_projection"
    vision_pools_class_token: ClassVar[bool] = True
    """Whether the image feature is read from the class token alone (CLIP), so that tokens appended to the image
    tokens change it only through attention; SigLIP's attention-pooling head reads every token."""

    def __init__(self, model: PreTrainedModel):
        if model.config.model_type not in self.model_types:
            raise ValueError(
                f"{type(self).__name__} takes {self.model_types} models, got {model.config.model_type!r}."
            )
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    # -- sizes ---------------------------------------------------------------------------------------------------

    @property
    def text_config(self):
        return self.model.config.text_config

    @property
    def text_width(self) -> int:
        return self.text_config.hidden_size

    @property
    def max_text_length(self) -> int:
        """The longest prompt the text tower takes (CLIP: 77, SigLIP: 64)."""
        return self.text_config.max_position_embeddings

    @property
    def vision_width(self) -> int:
        return self.model.config.vision_config.hidden_size

    @property
    def embed_dim(self) -> int:
        """Width of the joint image-text space (what `image_features` and `project_text` return)."""
        return self.model.config.projection_dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def describe(self) -> str:
        """One line for error messages: the family and its widths."""
        return f"{self.display_name} (text width {self.text_width}, embedding width {self.embed_dim})"

    # -- tokens --------------------------------------------------------------------------------------------------

    def tokenize(self, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids of hand-written texts as the family was trained on them (CLIP: padded to the longest, with an
        attention mask; SigLIP: padded to the full length, no mask)."""
        return tokenizer(texts, padding=True, return_tensors="pt")

    def pool_positions(self, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
        """[prompts] position of each prompt's pooled token: the first end-of-text token."""
        return (input_ids == eos_token_id).int().argmax(dim=-1)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.text_embeddings.token_embedding

    # -- the text tower, from input embeddings -------------------------------------------------------------------

    @property
    def text_model(self) -> nn.Module:
        return self.model.text_model

    @property
    def text_embeddings(self) -> nn.Module:
        """Adds position embeddings: `text_embeddings(inputs_embeds=..., position_ids=...)`."""
        return self.text_model.embeddings

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.text_model.encoder.layers

    def linear_attention(self, layer: nn.Module) -> str:
        """The path, under a text or vision `layer`, of its attention module with linear `q_proj`, `k_proj`,
        `v_proj` and `out_proj` (what CLIP-LoRA updates). A backbone whose attention packs them splits the layer's
        attention in place first (the same weights, copied): call it on a model's own copy."""
        return "self_attn"

    def text_modules(self) -> dict[str, nn.Module]:
        """Every module of the text path by attribute name (the tower, and the projection where it is separate):
        what a method that fine-tunes the text encoder copies."""
        return self._path_modules("text_model", self.text_projection_name)

    def text_attention_mask(
        self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The attention mask of prompts [prompts, length, width]: causal (prompts cut after their pooled token), or
        bidirectional over the tokens that `padding_mask` [prompts, length] marks 1 (None: every token)."""
        if self.causal_text:
            return create_causal_mask(config=self.text_config, inputs_embeds=hidden, attention_mask=None, cache=None)
        if padding_mask is None:
            return None
        return create_bidirectional_mask(config=self.text_config, inputs_embeds=hidden, attention_mask=padding_mask)

    def project_text(self, pooled: torch.Tensor, modules: dict[str, nn.Module] | None = None) -> torch.Tensor:
        """[..., embed_dim] text features of pooled hidden states [..., text_width]: the final layer norm and the
        projection (`modules` replaces the model's own, e.g. a fine-tuned copy from `text_modules`)."""
        modules = modules or self.text_modules()
        features = modules["text_model"].final_layer_norm(pooled)
        return modules[self.text_projection_name](features)

    def text_features(
        self, inputs: dict[str, torch.Tensor], modules: dict[str, nn.Module] | None = None
    ) -> torch.Tensor:
        """[texts, embed_dim] unnormalised text features of tokenized texts (`tokenize`) through the model's own text
        path, or through `modules` (a fine-tuned copy of `text_modules`)."""
        modules = modules or self.text_modules()
        pooled = modules["text_model"](**inputs).pooler_output
        if self.text_projection_name is None:
            return pooled
        return modules[self.text_projection_name](pooled)

    # -- the image tower ----------------------------------------------------------------------------------------

    @property
    def vision_model(self) -> nn.Module:
        return self.model.vision_model

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.vision_model.encoder.layers

    def vision_modules(self) -> dict[str, nn.Module]:
        """Every module of the image path by attribute name (what fixes the image features: the feature cache's
        fingerprint)."""
        return self._path_modules("vision_model", self.image_projection_name)

    def _path_modules(self, tower: str, projection: str | None) -> dict[str, nn.Module]:
        names = (tower, projection) if projection is not None else (tower,)
        return {name: getattr(self.model, name) for name in names}

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.vision_model.parameters()).dtype

    def image_features(
        self,
        pixel_values: torch.Tensor,
        *,
        embeddings_hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
        layer_hook: LayerHook | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[images, embed_dim] unnormalised image features of `pixel_values` [images, 3, H, W], through the model's
        own image path: `embeddings_hook(tokens)` on the patch (+ class) + position embeddings, before any norm
        (where deep prompts append their first tokens), `layer_hook(index, hidden)` before each encoder layer.
        SigLIP 2 NaFlex also takes its processor's patches with `pixel_attention_mask` and `spatial_shapes`."""
        naflex = {"pixel_attention_mask": pixel_attention_mask, "spatial_shapes": spatial_shapes}
        naflex = {name: value for name, value in naflex.items() if value is not None}
        if naflex and not self.takes_patches:
            raise ValueError(
                f"{self.display_name} takes images [batch, 3, H, W], not {', '.join(naflex)} (SigLIP 2 NaFlex inputs)."
            )
        with self._vision_hooks(embeddings_hook, layer_hook):
            return self._image_features(pixel_values.to(self.vision_dtype), **naflex)

    def image_processor(self, processor: Any) -> Any:
        """The processor that gives this family's `pixel_values` [images, 3, H, W] (CoOp's transforms resize, crop
        and normalise with it): the checkpoint's own, for every family but SigLIP 2 NaFlex."""
        return processor

    takes_patches: ClassVar[bool] = False
    """Whether the image tower also takes its processor's patches with a mask and grid shapes (SigLIP 2 NaFlex)."""

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    vision_layer_input: ClassVar[str] = "hidden_states"
    """The keyword under which a vision layer takes its input tokens (where `layer_hook` replaces them)."""

    def _hook_vision_embeddings(self, embeddings_hook: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        """Register `embeddings_hook` on the image tokens after the embeddings, before any norm; returns the handle."""
        embeddings = self.vision_model.embeddings
        return embeddings.register_forward_hook(lambda module, args, output: embeddings_hook(output))

    @contextmanager
    def _vision_hooks(
        self, embeddings_hook: Callable[[torch.Tensor], torch.Tensor] | None, layer_hook: LayerHook | None
    ) -> Iterator[None]:
        """Run the hooks of `image_features` on the vision modules while inside the block."""

        name = self.vision_layer_input

        def make_hook(index: int):
            def pre_hook(module, args, kwargs):
                if args:
                    return (layer_hook(index, args[0]), *args[1:]), kwargs
                return args, {**kwargs, name: layer_hook(index, kwargs[name])}

            return pre_hook

        handles = []
        if embeddings_hook is not None:
            handles.append(self._hook_vision_embeddings(embeddings_hook))
        if layer_hook is not None:
            handles += [
                layer.register_forward_pre_hook(make_hook(index), with_kwargs=True)
                for index, layer in enumerate(self.vision_layers)
            ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # -- the similarity head -------------------------------------------------------------------------------------

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The logits' additive bias (SigLIP), or None."""
        return None

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Class logits of L2-normalised image [batch, dim] and text [classes, dim] features: scale x cosine
        (+ bias)."""
        return self.scale_similarities(image_embeds @ text_embeds.to(image_embeds.dtype).t())

    def scale_similarities(self, cosine: torch.Tensor) -> torch.Tensor:
        """Cosine similarities (any shape) to logits: scale x cosine (+ bias)."""
        logits = self.logit_scale.exp() * cosine
        bias = self.logit_bias
        return logits if bias is None else logits + bias.to(logits.dtype)

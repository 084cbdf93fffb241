"""Deep vision-language prompts: learned tokens written into the first layers of both towers. The base shared by
the deep-prompt method folders (ivlp, maple, promptsrc), as peft keeps its tuners' base in `tuners_utils`.

`DeepPromptModel` is what MaPLe, IVLP and PromptSRC share:
1. The text prompt is "<phrase> <class>." with the phrase's first `n_ctx` tokens after the start token learned
   (the rest of the phrase kept as fixed words, as the official code splits it); before each text layer 2..J those
   positions are replaced by that layer's language prompts (`deep_text_prompts`).
2. The first vision prompts are appended to the image tokens after the embeddings, before any norm (where the
   official code appends them); before each image layer 2..J' the last tokens are replaced by that layer's own
   (`layer_vision_prompts`). Layers past a depth keep the last prompts.
3. Logits are the backbone's scaled cosine similarities between the two towers' features.

Both towers run on the backbone's own modules through its hooks (`coop_hf.backbones`; no copied weights). The text
prompts of all classes share the start token, the prompts and the fixed words at every layer, so on a causal text
tower that prefix is encoded once per step for all classes. These methods change the image tower: they are never
evaluated on cached image features (`image_tower_frozen = False`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..backbones import Backbone, backbone_for
from ..configuration_utils import check_unified_context_at_end
from ..prompts import CONTEXT_PLACEHOLDER, PromptTokens, context_init_ids, tokenize_prompts
from ..text_encoding import encode_prompts, shared_prefix_length
from .coop.configuration_coop import CoOpConfig
from .coop.modeling_coop import CoOpModel


def check_deep_prompt_settings(config: CoOpConfig, method: str, depths: dict[str, int]) -> None:
    """Refuse CoOp layouts and prompt depths that a deep-prompt method does not have, naming the flag."""
    check_unified_context_at_end(config, method)
    for name, (value, least) in depths.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} (--{name}) must be a whole number >= {least}, got {value!r}.")


class DeepPromptModel(CoOpModel):
    """Base of the deep vision-language prompt methods (see the module docstring). A subclass creates its tensors
    and defines which prompts each layer gets:

    - `prompt_depths(config)` (classmethod): (text layers, image layers) that get prompts;
    - `depth_flags(config)` (classmethod): those depth settings by name, for error messages;
    - `deep_text_prompts()`: the language prompts of text layers 2..J, [n_ctx, text width] each;
    - `layer_vision_prompts()`: the first image layer's prompts and each deeper layer's, [n, vision width] each, or
      None for no vision prompts.
    """

    image_tower_frozen = False
    transfers_to_new_classes = True

    def __init__(
        self, config: Any, clip: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any = None
    ):
        self.check_backbone(backbone_for(clip), config)
        super().__init__(config, clip, tokenizer, image_processor)  # the language context: drawn first

    @classmethod
    def check_backbone(cls, backbone: Backbone, config: Any) -> None:
        """Refuse a backbone without the layout, or with fewer layers than a prompt depth, naming the flag."""
        if not backbone.causal_text or not backbone.vision_pools_class_token:
            raise ValueError(
                f"{cls.method_name} puts its prompts after the text's start token and appends vision prompts that "
                f"only the class token reads, as in CLIP; {backbone.display_name} has no such layout. Use a CLIP, "
                "MetaCLIP 2 or open_clip ViT checkpoint (--model_name_or_path), or a method without vision prompts "
                "(--method coop)."
            )
        text_depth, vision_depth = cls.prompt_depths(config)
        for tower, depth, layers in (
            ("text", text_depth, len(backbone.text_layers)),
            ("image", vision_depth, len(backbone.vision_layers)),
        ):
            if depth > layers:
                flag = next(name for name, value in cls.depth_flags(config).items() if value == depth)
                raise ValueError(
                    f"{flag}={depth} (--{flag}) exceeds the {layers} layers of this backbone's {tower} tower."
                )

    @classmethod
    def resolve_settings(cls, tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> dict[str, Any]:
        return settings  # n_ctx is not the phrase's length: the phrase's first n_ctx tokens are learned

    @classmethod
    def build_config(
        cls, clip: PreTrainedModel, classnames: list[str], tokenizer: PreTrainedTokenizerBase, **settings
    ) -> Any:
        """The config `from_clip` gives, checked against the backbone before any work."""
        config = super().build_config(clip, classnames, tokenizer, **settings)
        cls.check_backbone(backbone_for(clip), config)
        return config

    def _phrase_ids(self) -> list[int]:
        """The phrase's token ids when the context starts from it (`n_ctx` no longer than the phrase), else []."""
        if self.config.ctx_init is None:
            return []
        ids = context_init_ids(self.tokenizer, self.config.ctx_init)
        return ids if self.config.n_ctx <= len(ids) else []

    def initial_context(self) -> torch.Tensor:
        """The first `n_ctx` token embeddings of the phrase, or N(0, 0.02) vectors."""
        phrase_ids = self._phrase_ids()
        if not phrase_ids:
            return torch.randn(self.config.n_ctx, self.backbone.text_width) * 0.02
        token_embedding = self.backbone.token_embedding
        ids = torch.tensor(phrase_ids[: self.config.n_ctx], device=token_embedding.weight.device)
        return token_embedding(ids).detach().float()

    def _tokenize(self, classnames: list[str]) -> PromptTokens:
        """ "<phrase> <class>." with the phrase's first `n_ctx` tokens as the context ("X ... X <class>." without a
        phrase)."""
        phrase_ids = self._phrase_ids()
        phrase = self.config.ctx_init if phrase_ids else " ".join([CONTEXT_PLACEHOLDER] * self.config.n_ctx)
        tokens = tokenize_prompts(
            self.tokenizer,
            classnames,
            n_ctx=len(phrase_ids) or self.config.n_ctx,
            ctx_init=phrase,
            class_token_position="end",
            backbone=self.backbone,
        )
        tokens.context_positions = tokens.context_positions[:, : self.config.n_ctx]
        return tokens

    def text_prompt_tensors(self) -> list[torch.Tensor]:
        return [self.prompt_learner.ctx, *self.deep_text_prompts()]

    def get_text_features(self, *, chunk_size: int | None = None, checkpoint: bool = False) -> torch.Tensor:
        """[classes, projection_dim] text features with the language prompts of every prompted layer; the shared
        start + prompt (+ fixed words) prefix is encoded once on a causal text tower."""
        learner = self.prompt_learner
        positions = learner.context_positions[0]
        start, end = int(positions[0]), int(positions[-1]) + 1
        deeper = self.deep_text_prompts()

        def replace_prompts(index: int, hidden: torch.Tensor) -> torch.Tensor:
            if not 1 <= index <= len(deeper):
                return hidden
            prompts = deeper[index - 1].to(hidden.dtype).expand(len(hidden), -1, -1)
            return torch.cat([hidden[:, :start], prompts, hidden[:, end:]], dim=1)

        prefix_length = shared_prefix_length(
            learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=False
        )
        return encode_prompts(
            self.backbone,
            learner(self.backbone.token_embedding),
            learner.eot_positions,
            prefix_length,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
            layer_hook=replace_prompts,
        )

    def image_features(
        self,
        pixel_values: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone's image features with the vision prompts: appended after the embeddings, replaced before
        each deeper prompted layer (`image_embeds` are refused: they would miss the prompts). Deep prompts need
        CLIP's layout, so NaFlex patches never reach here (the backbone refuses them)."""
        prompts = self.layer_vision_prompts()
        naflex = {"pixel_attention_mask": pixel_attention_mask, "spatial_shapes": spatial_shapes}
        if image_embeds is not None or pixel_values is None or prompts is None:
            return super().image_features(pixel_values, image_embeds, **naflex)  # refuses image_embeds clearly
        first, deeper = prompts
        count = len(first)

        def append_prompts(hidden: torch.Tensor) -> torch.Tensor:
            return torch.cat([hidden, first.to(hidden.dtype).expand(len(hidden), -1, -1)], dim=1)

        def replace_prompts(index: int, hidden: torch.Tensor) -> torch.Tensor:
            if not 1 <= index <= len(deeper):
                return hidden
            layer_prompts = deeper[index - 1].to(hidden.dtype).expand(len(hidden), -1, -1)
            return torch.cat([hidden[:, :-count], layer_prompts], dim=1)

        return self.backbone.image_features(
            pixel_values, embeddings_hook=append_prompts, layer_hook=replace_prompts, **naflex
        )

    def phrase_setting(self) -> str:
        """The model card's text-prompt row: the phrase and how much of it is learned, or "random"."""
        config = self.config
        return f'"{config.ctx_init}" (first {config.n_ctx} tokens learned)' if self._phrase_ids() else "random"

    def describe_prompt(self) -> str:
        text_depth, vision_depth = self.prompt_depths(self.config)
        return (
            f"{len(self.config.classnames)} classes, n_ctx={self.config.n_ctx}, depths {text_depth} / "
            f"{vision_depth}, text width {self.backbone.text_width}, vision width {self.backbone.vision_width}"
        )

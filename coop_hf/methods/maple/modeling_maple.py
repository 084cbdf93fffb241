"""MaPLe: multi-modal prompt learning (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

The whole computation, top to bottom:
1. The text prompt is CoOp's with `n_ctx` learned tokens after [SOS] (initialised from the first tokens of
   "a photo of a", the rest of the phrase kept as fixed words); before each of the text layers 2..J, those token
   positions are replaced by that layer's own learned prompts (`compound_prompts_text`).
2. The vision prompts are made from the language ones by linear coupling functions: `proj(ctx)` is appended to the
   image tokens before the first layer (before its pre-layer norm, as the reference appends it), and before each
   of the vision layers 2..J the last `n_ctx` tokens are replaced by `compound_prompt_projections[i](prompt_i)`.
3. Logits are the backbone's scaled cosine similarities between the two towers' features.

Both towers run on the backbone's own modules (`coop_hf.backbones`' per-layer hooks; no copied weights). The text
prompts of all classes share [SOS] + the learned tokens (+ the fixed words) at every layer, so on a causal text
tower that prefix is encoded once per step for all classes. MaPLe changes the image tower: it is never evaluated
on cached image features (`image_tower_frozen = False`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...backbones import Backbone, backbone_for
from ...prompts import CONTEXT_PLACEHOLDER, PromptTokens, context_init_ids, tokenize_prompts
from ...text_encoding import encode_prompts, shared_prefix_length
from ..coop.modeling_coop import CoOpModel
from .configuration_maple import MaPLeConfig

MAPLE_PAPER = (
    "Khattak et al., MaPLe: Multi-modal Prompt Learning, CVPR 2023",
    "https://arxiv.org/abs/2210.03117",
    """@inproceedings{khattak2023maple,
  title     = {MaPLe: Multi-modal Prompt Learning},
  author    = {Khattak, Muhammad Uzair and Rasheed, Hanoona and Maaz, Muhammad and Khan, Salman and
               Khan, Fahad Shahbaz},
  booktitle = {The IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2023}
}""",
)


def check_backbone(backbone: Backbone, config: MaPLeConfig) -> None:
    """Refuse a backbone without MaPLe's layout, or with fewer layers than the prompt depth, naming the flag."""
    if not backbone.causal_text or not backbone.vision_pools_class_token:
        raise ValueError(
            f"MaPLe puts its prompts after the text's start token and appends vision prompts that only the class "
            f"token reads, as in CLIP; {backbone.display_name} has no such layout. Use a CLIP or MetaCLIP 2 "
            "checkpoint (--model_name_or_path), or a method without vision prompts (--method coop)."
        )
    layers = min(len(backbone.text_layers), len(backbone.vision_layers))
    if config.prompt_depth > layers:
        raise ValueError(
            f"prompt_depth={config.prompt_depth} (--prompt_depth) exceeds the {layers} layers of this backbone."
        )


class MaPLeModel(CoOpModel):
    """A frozen backbone with coupled language and vision prompts in its first `prompt_depth` layers.

    Trained and saved: the language context `prompt_learner.ctx` [n_ctx, text width], the coupling `proj`
    (text width -> vision width), the deeper language prompts `compound_prompts_text` (J - 1 of [n_ctx, text width])
    and their couplings `compound_prompt_projections` (J - 1 linear layers).

    Example:

    ```python
    >>> from coop_hf import MaPLeModel

    >>> model = MaPLeModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # n_ctx 2, depth 9
    >>> logits = model(pixel_values=pixel_values).logits  # both towers prompted
    ```
    """

    config: MaPLeConfig
    config_class = MaPLeConfig
    method_name = "MaPLe"
    paper = MAPLE_PAPER
    image_tower_frozen = False
    transfers_to_new_classes = True

    def __init__(
        self,
        config: MaPLeConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        check_backbone(backbone_for(clip), config)
        super().__init__(config, clip, tokenizer, image_processor)  # the language context: drawn first
        backbone = self.backbone
        text_width, vision_width = backbone.text_width, backbone.vision_width
        # In the reference's order of random draws: the coupling, the deeper prompts, then one coupling layer
        # that every deeper layer starts from.
        self.proj = nn.Linear(text_width, vision_width)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.randn(config.n_ctx, text_width) * 0.02) for _ in range(config.prompt_depth - 1)]
        )
        coupling = nn.Linear(text_width, vision_width)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(coupling) for _ in range(config.prompt_depth - 1)]
        )
        self.to(backbone.device)
        self.post_init()

    @classmethod
    def resolve_settings(cls, tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> dict[str, Any]:
        return settings  # n_ctx is not the phrase's length: the phrase's first n_ctx tokens are learned

    @classmethod
    def build_config(
        cls, clip: PreTrainedModel, classnames: list[str], tokenizer: PreTrainedTokenizerBase, **settings
    ) -> MaPLeConfig:
        """The config `from_clip` gives, checked against the backbone before any work."""
        config = super().build_config(clip, classnames, tokenizer, **settings)
        check_backbone(backbone_for(clip), config)
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
        return [self.prompt_learner.ctx, *self.compound_prompts_text]

    def get_text_features(self, *, chunk_size: int | None = None, checkpoint: bool = False) -> torch.Tensor:
        """[classes, projection_dim] text features with the language prompts of every prompted layer; the shared
        [SOS] + prompt (+ fixed words) prefix is encoded once on a causal text tower."""
        learner = self.prompt_learner
        positions = learner.context_positions[0]
        start, end = int(positions[0]), int(positions[-1]) + 1
        deeper = list(self.compound_prompts_text)

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

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first layer's vision prompts `proj(ctx)` and each deeper layer's, [n_ctx, vision width] each."""
        deeper = [
            coupling(prompts)
            for coupling, prompts in zip(self.compound_prompt_projections, self.compound_prompts_text, strict=True)
        ]
        return self.proj(self.prompt_learner.ctx), deeper

    def image_features(self, pixel_values: torch.Tensor | None, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """The backbone's image features with the vision prompts: appended after the embeddings, replaced before
        each of the layers 2..J (`image_embeds` are refused: they would miss the prompts)."""
        if image_embeds is not None or pixel_values is None:
            return super().image_features(pixel_values, image_embeds)  # refuses with a clear error
        first, deeper = self.vision_prompts()
        n_ctx = self.config.n_ctx

        def append_prompts(hidden: torch.Tensor) -> torch.Tensor:
            return torch.cat([hidden, first.to(hidden.dtype).expand(len(hidden), -1, -1)], dim=1)

        def replace_prompts(index: int, hidden: torch.Tensor) -> torch.Tensor:
            if not 1 <= index <= len(deeper):
                return hidden
            prompts = deeper[index - 1].to(hidden.dtype).expand(len(hidden), -1, -1)
            return torch.cat([hidden[:, :-n_ctx], prompts], dim=1)

        return self.backbone.image_features(pixel_values, embeddings_hook=append_prompts, layer_hook=replace_prompts)

    # -- what is saved ---------------------------------------------------------------------------------------------

    def describe_prompt(self) -> str:
        return (
            f"{len(self.config.classnames)} classes, n_ctx={self.config.n_ctx}, depth {self.config.prompt_depth}, "
            f"text width {self.backbone.text_width}, vision width {self.backbone.vision_width}"
        )

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        phrase = f'"{config.ctx_init}" (first {config.n_ctx} tokens learned)' if self._phrase_ids() else "random"
        return [
            ("prompt tokens per layer (`n_ctx`)", str(config.n_ctx)),
            ("prompted layers per tower (`prompt_depth`)", str(config.prompt_depth)),
            ("text prompt (`ctx_init`)", phrase),
            ("vision prompts", "linear couplings of the language prompts, one per prompted layer"),
        ]

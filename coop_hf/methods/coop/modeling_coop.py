"""CoOp: learned prompt context in front of a frozen CLIP (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022), on any backbone of `coop_hf.backbones` (CLIP, MetaCLIP 2, SigLIP, SigLIP 2).

The whole computation, top to bottom:
1. `PromptLearner` writes the learned context vectors into the token embeddings of every class prompt.
2. `CoOpModel.get_text_features` runs those embeddings through the backbone's own text modules (position
   embeddings, encoder, final layer norm, pooling at the end-of-text token or SigLIP's last position, projection
   or head), encoding the prompt prefix that all classes share only once where the text tower is causal
   (`coop_hf.text_encoding`).
3. `forward` (`coop_hf.modeling_utils.TextFeatureClassifier`'s) compares them with the backbone's image features:
   scaled cosine similarities (plus SigLIP's bias) are the logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...modeling_utils import TextFeatureClassifier
from ...prompts import PromptTokens, context_init_ids, resolve_n_ctx, tokenize_prompts
from ...text_encoding import encode_prompts, shared_prefix_length
from .configuration_coop import CoOpConfig

CONTEXT_KEY = "prompt_learner.ctx"
COOP_PAPER = (
    "Zhou et al., Learning to Prompt for Vision-Language Models, IJCV 2022",
    "https://arxiv.org/abs/2109.01134",
    """@article{zhou2022coop,
  title   = {Learning to Prompt for Vision-Language Models},
  author  = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  journal = {International Journal of Computer Vision},
  year    = {2022}
}""",
)


class PromptLearner(nn.Module):
    """The learned context and the token ids of every class prompt.

    `ctx` is [n_ctx, width] for a unified context or [classes, n_ctx, width] for class-specific context; it
    is the only trainable tensor of a CoOp model and the only one saved.
    """

    def __init__(self, ctx: torch.Tensor, tokens: PromptTokens):
        super().__init__()
        self.ctx = nn.Parameter(ctx)
        self.set_tokens(tokens)

    def set_tokens(self, tokens: PromptTokens) -> None:
        """Install the token ids of a class list (derived from the tokenizer, so not saved)."""
        device = self.ctx.device
        self.register_buffer("input_ids", tokens.input_ids.to(device), persistent=False)
        self.register_buffer("context_positions", tokens.context_positions.to(device), persistent=False)
        self.register_buffer("eot_positions", tokens.eot_positions.to(device), persistent=False)
        mask = tokens.attention_mask
        self.register_buffer("attention_mask", None if mask is None else mask.to(device), persistent=False)
        self.text_start = tokens.text_start

    @property
    def class_specific(self) -> bool:
        return self.ctx.dim() == 3

    def forward(self, token_embedding: nn.Embedding) -> torch.Tensor:
        """[classes, length, width] prompt embeddings: the class tokens' embeddings with the context written in."""
        embeds = token_embedding(self.input_ids)
        num_classes, n_ctx = self.context_positions.shape
        ctx = self.ctx.to(embeds.dtype).expand(num_classes, n_ctx, -1)
        rows = torch.arange(num_classes, device=embeds.device).unsqueeze(1).expand(-1, n_ctx)
        return embeds.index_put((rows, self.context_positions), ctx)


class CoOpModel(TextFeatureClassifier):
    """A frozen contrastive backbone (`CLIPModel`, `MetaClip2Model`, `SiglipModel`, `Siglip2Model`) whose class
    prompts carry learned context vectors.

    Build one with [`CoOpModel.from_clip`], load a saved prompt with [`CoOpModel.from_pretrained`]. Only
    `prompt_learner.ctx` trains; every CLIP parameter is frozen and CLIP stays in eval mode (dropout off).

    Example:

    ```python
    >>> from coop_hf import CoOpModel

    >>> model = CoOpModel.from_clip("openai/clip-vit-base-patch32", ["daisy", "rose"], ctx_init="a photo of a")
    >>> logits = model(pixel_values=pixel_values).logits  # [batch, 2]; untrained: zero-shot CLIP on the phrase
    ```
    """

    config: CoOpConfig
    config_class = CoOpConfig
    method_name = "CoOp"
    paper = COOP_PAPER
    transfers_to_new_classes = True

    def __init__(
        self,
        config: CoOpConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self.prompt_learner = PromptLearner(self.initial_context(), self._tokenize(config.classnames))
        self.post_init()

    def initial_context(self) -> torch.Tensor:
        """The context before training: the token embeddings of `ctx_init`, or N(0, 0.02) vectors (one set per
        class with class-specific context)."""
        config = self.config
        if config.ctx_init is not None:
            resolve_n_ctx(self.tokenizer, config.n_ctx, config.ctx_init)  # a config may contradict its phrase
            init_ids = context_init_ids(self.tokenizer, config.ctx_init)
            token_embedding = self.backbone.token_embedding
            return token_embedding(torch.tensor(init_ids, device=token_embedding.weight.device)).detach().float()
        shape = (len(config.classnames),) if config.class_specific_context else ()
        return torch.randn(*shape, config.n_ctx, self.backbone.text_width) * 0.02

    @classmethod
    def resolve_settings(cls, tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> dict[str, Any]:
        """`n_ctx` resolved against the phrase (`ctx_init` given, else the method's default one): with a phrase, the
        context length is its token count, and an `n_ctx` that contradicts it is an error naming both flags."""
        default = cls.config_class.__dataclass_fields__["ctx_init"].default
        phrase = settings.get("ctx_init", default)
        if "n_ctx" not in settings and not phrase:
            return settings
        default_of = None if "ctx_init" in settings else cls.method_name
        return {**settings, "n_ctx": resolve_n_ctx(tokenizer, settings.get("n_ctx"), phrase, default_of=default_of)}

    def _tokenize(self, classnames: list[str]) -> PromptTokens:
        return tokenize_prompts(
            self.tokenizer,
            classnames,
            n_ctx=self.config.n_ctx,
            ctx_init=self.config.ctx_init,
            class_token_position=self.config.class_token_position,
            backbone=self.backbone,
        )

    def set_classnames(self, classnames: list[str]) -> None:
        """Move a unified context to a new class list: only the class-name tokens change."""
        if self.prompt_learner.class_specific:
            raise ValueError(
                f"This prompt has class-specific context (one context for each of its {len(self.config.classnames)} "
                f"training classes, --class_specific_context true), so it cannot move to a new class list (here "
                f"{len(classnames)} classes). Evaluate it on the classes it was trained on (the training --dataset), "
                "or train a unified context (--class_specific_context false) to transfer it to other classes."
            )
        self.config.set_classnames(classnames)
        self.prompt_learner.set_tokens(self._tokenize(self.classnames))
        self.prompt_changed()

    def get_text_features(self, *, chunk_size: int | None = None, checkpoint: bool = False) -> torch.Tensor:
        """[classes, projection_dim] unnormalised text features of the current prompts, exactly as the backbone's
        `get_text_features` returns them for the equivalent text.

        On a causal text tower the [SOS] + context prefix that all prompts share (as far as the token layout allows)
        is encoded once; `chunk_size` (classes per pass) and `checkpoint` (recompute activations in backward) only
        save memory.
        """
        learner = self.prompt_learner
        prompt_embeds = learner(self.backbone.token_embedding)
        prefix_length = shared_prefix_length(
            learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=learner.class_specific
        )
        return encode_prompts(
            self.backbone,
            prompt_embeds,
            learner.eot_positions,
            prefix_length,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
            attention_mask=learner.attention_mask,
        )

    def text_prompt_tensors(self) -> list[torch.Tensor]:
        return [self.prompt_learner.ctx]

    def class_token_ids(self) -> torch.Tensor:
        return self.prompt_learner.input_ids

    @torch.no_grad()
    def nearest_tokens(self, top_k: int = 5) -> list[list[tuple[str, float]]] | list[list[list[tuple[str, float]]]]:
        """What the prompt learned, in words: for each context vector, the `top_k` vocabulary tokens nearest to it in
        the backbone's token-embedding space (Euclidean distance, as the reference's `interpret_prompt.py`), nearest
        first, as (word, distance) pairs: `[n_ctx][top_k]` for a unified context, `[classes][n_ctx][top_k]` for
        class-specific context."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive number of tokens, got {top_k!r}.")
        vocabulary = self.backbone.token_embedding.weight
        ctx = self.prompt_learner.ctx.to(vocabulary)
        exact = "donot_use_mm_for_euclid_dist"  # the matmul shortcut is off by ~1e-4 near zero distance
        distances = torch.cdist(ctx.reshape(-1, ctx.shape[-1]), vocabulary, compute_mode=exact)
        nearest = distances.topk(min(top_k, len(vocabulary)), dim=-1, largest=False)
        words = [
            [(self._readable_token(index), float(distance)) for index, distance in zip(indices, values, strict=True)]
            for indices, values in zip(nearest.indices.tolist(), nearest.values.tolist(), strict=True)
        ]
        if not self.prompt_learner.class_specific:
            return words
        n_ctx = ctx.shape[-2]
        return [words[start : start + n_ctx] for start in range(0, len(words), n_ctx)]

    def _readable_token(self, token_id: int) -> str:
        """The token as text: byte-level BPE pieces decoded ("👊🏼", not "ðŁĳĬðŁı¼"), word-end marks dropped."""
        text = self.tokenizer.decode([token_id]).strip()
        return text or str(self.tokenizer.convert_ids_to_tokens(token_id))

    # -- what is saved ---------------------------------------------------------------------------------------------

    def describe_prompt(self) -> str:
        return (
            f"{len(self.config.classnames)} classes, n_ctx={self.config.n_ctx}, text width "
            f"{self.backbone.text_width}, class-specific={self.config.class_specific_context}"
        )

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        settings = [
            ("context vectors (`n_ctx`)", str(config.n_ctx)),
            ("initialisation (`ctx_init`)", f'"{config.ctx_init}"' if config.ctx_init else "random N(0, 0.02)"),
            ("class token position", config.class_token_position),
            ("class-specific context", str(config.class_specific_context)),
        ]
        if not config.class_specific_context:
            nearest = " · ".join(f"`{vector[0][0]}`" for vector in self.nearest_tokens(top_k=1))
            settings.append(("nearest word of each context vector", nearest))
        return settings

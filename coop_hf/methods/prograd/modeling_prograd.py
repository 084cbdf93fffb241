"""ProGrad: CoOp whose cross-entropy gradient is projected off the direction that conflicts with zero-shot CLIP's
(Zhu et al., "Prompt-aligned Gradient for Prompt Tuning", ICCV 2023).

The model is a CoOp prompt plus the zero-shot teacher: CLIP's normalised text features of the hand-crafted prompt
`template` for every class (a non-persistent buffer, recomputed from CLIP and the class names). The update rule,
which needs the gradients of two losses, is [`ProGradTrainer`]'s training step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ...prompts import CONTEXT_PLACEHOLDER, PromptTokens, context_init_ids, tokenize_prompts
from ..coop.modeling_coop import CoOpModel
from .configuration_prograd import ProGradConfig

PROGRAD_PAPER = (
    "Zhu et al., Prompt-aligned Gradient for Prompt Tuning, ICCV 2023",
    "https://arxiv.org/abs/2205.14865",
    """@inproceedings{zhu2023prograd,
  title     = {Prompt-aligned Gradient for Prompt Tuning},
  author    = {Zhu, Beier and Niu, Yulei and Han, Yucheng and Wu, Yue and Zhang, Hanwang},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
)


class ProGradModel(CoOpModel):
    """A CoOp prompt with ProGrad's initialisation and its zero-shot CLIP teacher.

    With an initialisation phrase of p words (by default the template's text before " {}."), the context is
    `n_ctx - p` zero vectors followed by the embeddings of the phrase's first p BPE tokens, and the prompt reads
    "X ... X <phrase> <class>." as in the reference; a phrase with more BPE tokens than words (punctuation) leaves
    its last tokens frozen between the context and the class name. `forward` gives CoOp's logits and
    cross-entropy; [`ProGradTrainer`] combines it with `distillation_loss` into ProGrad's update.

    Example:

    ```python
    >>> from coop_hf import ProGradModel
    >>> from coop_hf.methods.prograd.trainer import ProGradTrainer

    >>> model = ProGradModel.from_clip(clip, ["daisy", "rose"], template="a type of flower, a photo of a {}.")
    >>> trainer = ProGradTrainer(model=model, args=CoOpTrainingArguments("out"), train_dataset=train)
    ```
    """

    config: ProGradConfig
    config_class = ProGradConfig
    method_name = "ProGrad"
    paper = PROGRAD_PAPER

    def __init__(
        self,
        config: ProGradConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self._set_zero_shot_text_embeds()

    @classmethod
    def resolve_settings(cls, tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> dict[str, Any]:
        return settings  # the phrase fills the last of n_ctx slots: it does not set the context length

    @classmethod
    def build_config(
        cls, clip: PreTrainedModel, classnames: list[str], tokenizer: PreTrainedTokenizerBase, **settings
    ) -> ProGradConfig:
        """The config `from_clip` gives for these prompt settings, without building the model. Unlike CoOp's, the
        context length is not the phrase's token count: the phrase fills the last of `n_ctx` slots."""
        config = super().build_config(clip, classnames, tokenizer, **settings)
        if config.ctx_init is not None:
            _phrase_ids(tokenizer, config.ctx_init, config.class_token_position)
        return config

    def initial_context(self) -> torch.Tensor:
        """Zero vectors, then the embeddings of the phrase's first word-count tokens; without a phrase, CoOp's
        random N(0, 0.02) vectors."""
        config = self.config
        if config.ctx_init is None:
            return super().initial_context()
        phrase_ids = _phrase_ids(self.tokenizer, config.ctx_init, config.class_token_position)
        token_embedding = self.backbone.token_embedding
        device = token_embedding.weight.device
        ctx = torch.zeros(config.n_ctx, token_embedding.embedding_dim, device=device)
        ctx[config.n_ctx - len(phrase_ids) :] = token_embedding(torch.tensor(phrase_ids, device=device)).detach()
        return ctx

    def _tokenize(self, classnames: list[str]) -> PromptTokens:
        config = self.config
        if config.ctx_init is None:
            return super()._tokenize(classnames)
        words = len(config.ctx_init.split(" "))
        context_text = " ".join([CONTEXT_PLACEHOLDER] * (config.n_ctx - words) + [config.ctx_init])
        return tokenize_prompts(
            self.tokenizer,
            classnames,
            n_ctx=config.n_ctx,
            ctx_init=context_text,
            class_token_position=config.class_token_position,
            backbone=self.backbone,
        )

    def _set_zero_shot_text_embeds(self) -> None:
        embeds = zero_shot_weights(self.clip, self.tokenizer, self.classnames, [self.config.template])
        self.register_buffer("zero_shot_text_embeds", embeds.float(), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move the context to a new class list; the zero-shot teacher follows it."""
        super().set_classnames(classnames)
        self._set_zero_shot_text_embeds()

    def zero_shot_logits(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """[batch, classes] the teacher's logits: zero-shot CLIP with `template` on the same image features."""
        image_embeds = F.normalize(image_embeds.detach().float(), dim=-1)
        return self.backbone.scale_similarities(image_embeds @ self.zero_shot_text_embeds.float().t()).float()

    def distillation_loss(self, logits: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """The reference's "KL" term: mean over the batch of the cross-entropy between the teacher's and the
        student's softened class distributions, times T² (the KL up to the teacher's entropy, a constant)."""
        temperature = self.config.prograd_temperature
        teacher = F.softmax(self.zero_shot_logits(image_embeds) / temperature, dim=-1)
        student = F.log_softmax(logits.float() / temperature, dim=-1)
        return -(teacher * student).sum(dim=-1).mean() * temperature * temperature

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            *super().card_settings(),
            ("gradient projection strength λ (`prograd_lambda`)", f"{config.prograd_lambda:g}"),
            ("distillation temperature T (`prograd_temperature`)", f"{config.prograd_temperature:g}"),
            ("zero-shot teacher prompt (`template`)", f'"{config.template}"'),
        ]


def _phrase_ids(tokenizer: PreTrainedTokenizerBase, phrase: str, class_token_position: str) -> list[int]:
    """The token ids ProGrad's context takes from a phrase: its first word-count BPE tokens (the reference counts
    words, not tokens), checked against what the prompt layout allows."""
    words = len(phrase.split(" "))
    ids = context_init_ids(tokenizer, phrase)
    if len(ids) < words:
        raise ValueError(
            f"ctx_init={phrase!r} (--ctx_init) has {words} space-separated words but only {len(ids)} BPE tokens: "
            "separate its words by single spaces."
        )
    if len(ids) > words and class_token_position != "end":
        raise ValueError(
            f"ctx_init={phrase!r} (--ctx_init) is {len(ids)} BPE tokens for {words} words: ProGrad's context takes "
            "only the first word-count tokens and the rest stays before the class name, so the class tokens cannot "
            f"move to the {class_token_position}. Use --class_token_position end or a phrase without punctuation."
        )
    return ids[:words]

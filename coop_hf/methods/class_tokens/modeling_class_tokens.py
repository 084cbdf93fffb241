"""PTNL's class-token models: CoOp prompts whose class-name token embeddings are learned (Wu et al., "Why Is Prompt
Tuning for Vision-Language Models Robust to Noisy Labels?", ICCV 2023).

Full-Prompt-Tuning learns the context and the class-name tokens; CLS-Tuning keeps the context at the token
embeddings of a hand-written phrase ("a photo of a") and learns the class-name tokens alone, so untrained it is
zero-shot CLIP on "a photo of a {class}.".

The class-name token embeddings of all classes are packed in one parameter `class_embeds` [name tokens, width]
(class names have different token counts) and written into each prompt at its class-name positions after the
context; the [SOS] + context prefix shared by every class is still encoded once.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...text_encoding import encode_prompts, shared_prefix_length
from ..coop.modeling_coop import CoOpModel
from ..papers import PTNL_PAPER
from .configuration_class_tokens import ClassTokenConfig


class ClassTokenTuningModel(CoOpModel):
    """A CoOp prompt whose class-name token embeddings are learned: with the context (`learn_context=True`,
    Full-Prompt-Tuning) or behind the fixed `ctx_init` phrase (`learn_context=False`, CLS-Tuning).

    `class_embeds` [name tokens, width] starts as CLIP's token embeddings of the class names and is saved; so is
    `prompt_learner.ctx` when it is learned. A fixed context is a non-persistent buffer, rebuilt from `ctx_init`.
    The learned class tokens belong to their classes, so the prompt cannot move to another class list.

    Example:

    ```python
    >>> from coop_hf import ClassTokenTuningModel

    >>> model = ClassTokenTuningModel.from_clip(clip, ["daisy", "rose"], ctx_init="a photo of a", learn_context=False)
    >>> logits = model(pixel_values=pixel_values).logits  # untrained: zero-shot CLIP on "a photo of a {class}."
    ```
    """

    config: ClassTokenConfig
    config_class = ClassTokenConfig
    method_name = "Class-token tuning"
    paper = PTNL_PAPER
    transfers_to_new_classes = False

    def __init__(
        self,
        config: ClassTokenConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self.method_name = "Full-Prompt-Tuning" if config.learn_context else "CLS-Tuning"
        learner = self.prompt_learner
        if not config.learn_context:
            context = learner.ctx.detach()
            del learner.ctx
            learner.register_buffer("ctx", context, persistent=False)
        rows, positions = self._class_name_positions()
        self.register_buffer("class_name_rows", rows, persistent=False)
        self.register_buffer("class_name_positions", positions, persistent=False)
        token_embedding = self.backbone.token_embedding
        with torch.no_grad():
            initial = token_embedding(learner.input_ids[rows, positions]).float()
        self.class_embeds = torch.nn.Parameter(initial)

    def _class_name_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, position) of every class-name token, class by class: the first tokens after the leading special
        tokens ([SOS]) that are not context, as many as the name's tokens."""
        learner = self.prompt_learner
        rows, positions = [], []
        for row, name in enumerate(self.config.classnames):
            count = len(self.tokenizer(name, add_special_tokens=False)["input_ids"])
            context = set(learner.context_positions[row].tolist())
            eot = int(learner.eot_positions[row])
            start = learner.text_start + self._padding_before(row)
            free = [position for position in range(start, eot) if position not in context][:count]
            rows.extend([row] * len(free))
            positions.extend(free)
        device = learner.input_ids.device
        return torch.tensor(rows, device=device), torch.tensor(positions, device=device)

    def _padding_before(self, row: int) -> int:
        """Padding tokens before the prompt of class `row` (a tokenizer that pads on the left: SigLIP 2's)."""
        mask = self.prompt_learner.attention_mask
        return 0 if mask is None else int(mask[row].argmax())

    def prompt_embeddings(self) -> torch.Tensor:
        """[classes, length, width] prompt embeddings: context and learned class-name tokens written in."""
        embeds = self.prompt_learner(self.backbone.token_embedding)
        names = self.class_embeds.to(embeds.dtype)
        return embeds.index_put((self.class_name_rows, self.class_name_positions), names)

    def get_text_features(self, *, chunk_size: int | None = None, checkpoint: bool = False) -> torch.Tensor:
        learner = self.prompt_learner
        prefix_length = shared_prefix_length(
            learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=learner.class_specific
        )
        # Equal class-name token ids are not equal embeddings once learned: the prefix ends before any name token.
        prefix_length = min(prefix_length, int(self.class_name_positions.min()))
        return encode_prompts(
            self.backbone,
            self.prompt_embeddings(),
            learner.eot_positions,
            prefix_length,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
            attention_mask=learner.attention_mask,
        )

    def text_prompt_tensors(self) -> list[torch.Tensor]:
        return [self.prompt_learner.ctx, self.class_embeds]

    def set_classnames(self, classnames: list[str]) -> None:
        """Refused: the learned class-name tokens belong to the training classes."""
        raise ValueError(
            f"This {self.method_name} prompt learned the token embeddings of its {len(self.config.classnames)} "
            f"training class names, which mean nothing for other classes (here {len(classnames)}), so it cannot move "
            "to a new class list. Evaluate it on the classes it was trained on (the training --dataset), or train a "
            "CoOp prompt (--method coop) to transfer it to other classes."
        )

    def describe_prompt(self) -> str:
        return f"{super().describe_prompt()}, {self.class_embeds.shape[0]} class-name tokens"

    def card_settings(self) -> list[tuple[str, str]]:
        return [
            *super().card_settings(),
            ("context learned (`learn_context`)", str(self.config.learn_context)),
            ("class-name token embeddings learned", f"{self.class_embeds.shape[0]} tokens"),
        ]

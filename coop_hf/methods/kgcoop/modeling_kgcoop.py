"""KgCoOp: CoOp whose class text features are kept close to those of a hand-crafted prompt (Yao et al.,
"Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023).

The loss is CoOp's cross-entropy plus `kg_weight * (1 - mean_k cos(w_k, w_clip_k))`, where `w_k` is the learned
prompt's text feature of class k and `w_clip_k` CLIP's text feature of the hand-crafted prompt `template` for it,
exactly as the reference code computes it (`torch.nn.CosineSimilarity(dim=1, eps=1e-7)` over the classes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...baselines import zero_shot_weights
from ..coop.modeling_coop import CoOpModel
from .configuration_kgcoop import KgCoOpConfig

KGCOOP_PAPER = (
    "Yao et al., Visual-Language Prompt Tuning with Knowledge-guided Context Optimization, CVPR 2023",
    "https://arxiv.org/abs/2303.13283",
    """@inproceedings{yao2023kgcoop,
  title     = {Visual-Language Prompt Tuning with Knowledge-guided Context Optimization},
  author    = {Yao, Hantao and Zhang, Rui and Xu, Changsheng},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}""",
)
COSINE_EPS = 1e-7  # the reference's CosineSimilarity eps


class KgCoOpModel(CoOpModel):
    """A CoOp prompt trained with KgCoOp's knowledge-guided regulariser.

    The hand-crafted prompt's text features (`handcrafted_text_embeds`, [classes, projection_dim], normalised) are
    computed once from the frozen CLIP, the class names and `config.template`, and again by `set_classnames`; they
    are a non-persistent buffer, so only the context is saved. At inference the model is a CoOp prompt.

    Example:

    ```python
    >>> from coop_hf import KgCoOpModel

    >>> model = KgCoOpModel.from_clip(clip, ["daisy", "rose"], template="a photo of a {}, a type of flower.")
    >>> loss = model(pixel_values=pixel_values, labels=labels).loss  # CE + 8.0 * (1 - mean cosine)
    ```
    """

    config: KgCoOpConfig
    config_class = KgCoOpConfig
    method_name = "KgCoOp"
    paper = KGCOOP_PAPER
    has_own_loss = True

    def __init__(
        self,
        config: KgCoOpConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self._set_handcrafted_text_embeds()

    def _set_handcrafted_text_embeds(self) -> None:
        embeds = zero_shot_weights(self.clip, self.tokenizer, self.classnames, [self.config.template])
        self.register_buffer("handcrafted_text_embeds", embeds.float(), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move the context to a new class list; the hand-crafted prompt's text features follow it."""
        super().set_classnames(classnames)
        self._set_handcrafted_text_embeds()

    def knowledge_guided_score(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """1 - the mean over classes of the cosine between the learned and the hand-crafted text features."""
        handcrafted = self.handcrafted_text_embeds.to(text_embeds)
        return 1.0 - F.cosine_similarity(text_embeds, handcrafted, dim=-1, eps=COSINE_EPS).mean()

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """KgCoOp's loss: cross-entropy + `kg_weight` * `knowledge_guided_score`."""
        score = self.knowledge_guided_score(text_embeds.float())
        return super().compute_loss(logits, labels, text_embeds) + self.config.kg_weight * score

    def card_settings(self) -> list[tuple[str, str]]:
        return [
            *super().card_settings(),
            ("knowledge-guided weight λ (`kg_weight`)", f"{self.config.kg_weight:g}"),
            ("hand-crafted prompt (`template`)", f'"{self.config.template}"'),
        ]

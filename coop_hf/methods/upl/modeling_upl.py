"""A prompt ensemble: several CoOp prompts for the same classes on one frozen CLIP, whose logits are averaged, as
UPL (Huang et al., "Unsupervised Prompt Learning for Vision-Language Models", 2022) does at test time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...hub import ModelCardInfo
from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel
from ..coop.modeling_coop import COOP_PAPER, CoOpModel
from .configuration_upl import MEMBER_FIELDS, SHARED_SETTINGS, CoOpEnsembleConfig

UPL_PAPER = (
    "Huang et al., Unsupervised Prompt Learning for Vision-Language Models, 2022",
    "https://arxiv.org/abs/2204.03649",
    """@article{huang2022upl,
  title   = {Unsupervised Prompt Learning for Vision-Language Models},
  author  = {Huang, Tony and Chu, Jack and Wei, Fangyun},
  journal = {arXiv preprint arXiv:2204.03649},
  year    = {2022}
}""",
)


class CoOpEnsemble(PromptPreTrainedModel):
    """Several CoOp prompts for the same classes on one frozen CLIP; its logits are the mean of theirs.

    Build one from trained [`CoOpModel`]s with `CoOpEnsemble(members)`; they must share the class list, the base
    CLIP and the context layout (n_ctx, class token position, class-specific context). Members sitting on a copy of
    the first member's CLIP (identical weights) are moved onto it, so the ensemble holds one CLIP.
    """

    config: CoOpEnsembleConfig
    config_class = CoOpEnsembleConfig
    method_name = "CoOp ensemble"
    paper = COOP_PAPER

    def __init__(self, members: Sequence[CoOpModel], image_processor: Any | None = None):
        members = list(members)
        if not members:
            raise ValueError("A CoOpEnsemble needs at least one CoOpModel.")
        # Exactly CoOpModel: a subclass (CoCoOp, KgCoOp, ...) holds more than a context and would load back as CoOp.
        not_coop = [index for index, member in enumerate(members) if type(member) is not CoOpModel]
        if not_coop:
            raise TypeError(f"CoOpEnsemble members must be CoOpModel instances; members {not_coop} are not.")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            _check_compatible(first, member, index)
        for member in members[1:]:
            member.clip, member.backbone = first.clip, first.backbone
        config = CoOpEnsembleConfig(
            **{field: getattr(first.config, field) for field in MEMBER_FIELDS}, num_members=len(members)
        )
        config.architectures = [type(self).__name__]
        super().__init__(config, first.clip, first.tokenizer, image_processor or first.image_processor)
        self.members = nn.ModuleList(members)
        self.post_init()

    def set_classnames(self, classnames: list[str]) -> None:
        """Move every member (unified contexts only) to a new class list."""
        for member in self.members:
            member.set_classnames(classnames)
        first = self.members[0].config
        self.config.classnames, self.config.id2label, self.config.label2id = (
            list(first.classnames),
            dict(first.id2label),
            dict(first.label2id),
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Mean class logits of the members for `pixel_values` [batch, 3, H, W] or precomputed CLIP `image_embeds`
        [batch, projection_dim] (the image features are computed once for all members). With `labels`, also the
        cross-entropy of the mean logits. `text_embeds` is [members, classes, projection_dim]."""
        image_embeds = self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes)
        outputs = [member(image_embeds=image_embeds) for member in self.members]
        logits = torch.stack([output.logits for output in outputs]).mean(dim=0)
        text_embeds = torch.stack([output.text_embeds for output in outputs])
        return self.classification_output(
            logits, labels, return_dict, image_embeds=outputs[0].image_embeds, text_embeds=text_embeds
        )

    # -- saving and loading ------------------------------------------------------------------------------------

    def prompt_changed(self) -> None:
        for member in self.members:
            member.prompt_changed()

    def describe_prompt(self) -> str:
        return f"{self.config.num_members} members, {self.members[0].describe_prompt()}"

    def card_info(self) -> ModelCardInfo:
        info = super().card_info()
        info.summary = (
            f"An ensemble of {self.config.num_members} [CoOp]({COOP_PAPER[1]}) prompts for **{info.base_model}** "
            f"over {len(info.classnames)} classes whose logits are averaged, as [UPL]({UPL_PAPER[1]}) does at test "
            "time with prompts trained from several seeds."
        )
        info.settings = [("prompts in the ensemble", str(self.config.num_members)), *self.members[0].card_settings()]
        info.extra_citations = [UPL_PAPER[2]]
        info.tags = ["upl", "ensemble"]
        return info

    @classmethod
    def from_saved_config(
        cls,
        config: CoOpEnsembleConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
    ) -> CoOpEnsemble:
        members = [
            CoOpModel(config.member_config(), clip=clip, tokenizer=tokenizer) for _ in range(config.num_members)
        ]
        return cls(members, image_processor=image_processor)


def _check_compatible(first: CoOpModel, member: CoOpModel, index: int) -> None:
    """Raise a `ValueError` naming the first setting or CLIP difference between member `index` and member 0."""
    for field in SHARED_SETTINGS:
        expected, found = getattr(first.config, field), getattr(member.config, field)
        if expected != found:
            if field == "classnames":
                found, expected = _first_difference(found, expected)
            raise ValueError(
                f"CoOpEnsemble member {index} differs from member 0 in {field}: {found!r} vs {expected!r}. An "
                "ensemble averages prompts for the same class list on the same CLIP with the same context layout."
            )
    if member.clip is not first.clip and not _same_weights(first.clip, member.clip):
        raise ValueError(
            f"CoOpEnsemble member {index} sits on a different CLIP than member 0 (its weights differ or lie on "
            "another device): load every member onto one CLIP, e.g. CoOpModel.from_pretrained(path, clip_model=clip)."
        )


def _first_difference(found: list[str], expected: list[str]) -> tuple[str, str]:
    if len(found) != len(expected):
        return f"{len(found)} classes", f"{len(expected)} classes"
    position = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
    return f"class {position} = {found[position]!r}", f"{expected[position]!r}"


def _same_weights(first: nn.Module, other: nn.Module) -> bool:
    first_state, other_state = first.state_dict(), other.state_dict()
    return first_state.keys() == other_state.keys() and all(
        first_state[key].device == other_state[key].device and torch.equal(first_state[key], other_state[key])
        for key in first_state
    )

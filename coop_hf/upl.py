"""Unsupervised prompt learning (UPL: Huang et al., "Unsupervised Prompt Learning for Vision-Language Models",
2022): pseudo-label unlabeled images with zero-shot CLIP, keep the most confident ones per class, train CoOp
prompts on them with several seeds, and average the prompts' logits at test time ([`CoOpEnsemble`])."""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from .atomic import atomic_directory
from .configuration_coop import CoOpConfig
from .hub import render_model_card
from .modeling_coop import (
    CONTEXT_KEY,
    PROMPT_WEIGHTS_NAME,
    CoOpModel,
    CoOpOutput,
    CoOpPreTrainedModel,
    load_base_clip,
    split_pretrained_kwargs,
)

UPL_TOP_K = 16
"""Pseudo-labelled images kept per class in UPL."""

TRUE_LABEL = "true_label"
PSEUDO_CONFIDENCE = "pseudo_confidence"

# ctx_init is left out: it only initialises the context, so members may differ in it.
_SHARED_SETTINGS = ("classnames", "base_model_name_or_path", "n_ctx", "class_token_position", "class_specific_context")
_MEMBER_FIELDS = (*_SHARED_SETTINGS, "ctx_init")


# -- pseudo-labels ---------------------------------------------------------------------------------------------


def select_confident_pseudo_labels(
    logits: torch.Tensor, top_k: int = UPL_TOP_K
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UPL's selection: label every image with the argmax of its zero-shot probabilities and keep, per predicted
    class, the `top_k` most confident images (a class predicted fewer times keeps all of its images).

    Args:
        logits: [images, classes] zero-shot logits of the unlabeled images.
        top_k: Images kept per predicted class.

    Returns:
        `(indices, pseudo_labels, confidences)`, each [kept]: row indices into `logits`, their predicted class and
        its softmax probability, grouped by class in label order and by decreasing confidence within a class
        (equal confidences by row index).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k is the number of images kept per class and must be an integer >= 1, got {top_k!r}.")
    if logits.dim() != 2:
        raise ValueError(f"logits must be [images, classes], got shape {tuple(logits.shape)}.")
    confidences, predictions = logits.detach().float().softmax(dim=-1).max(dim=-1)
    confidences, predictions = confidences.cpu().numpy(), predictions.cpu().numpy()
    # lexsort sorts by the last key first: by class, then by decreasing confidence, then by row index.
    order = np.lexsort((np.arange(len(predictions)), -confidences, predictions))
    rank_in_class = np.arange(len(order)) - np.searchsorted(predictions[order], predictions[order])
    kept = torch.from_numpy(order[rank_in_class < top_k])
    return kept, torch.from_numpy(predictions)[kept], torch.from_numpy(confidences)[kept]


def pseudo_label_dataset(
    dataset: datasets.Dataset,
    logits: torch.Tensor,
    top_k: int = UPL_TOP_K,
    *,
    classnames: list[str] | None = None,
) -> datasets.Dataset:
    """The UPL training split: the rows of `dataset` kept by [`select_confident_pseudo_labels`], with their
    pseudo-label as "label" and its probability as "pseudo_confidence".

    A true "label" column of `dataset` is kept as "true_label" (never used for training; see
    [`pseudo_label_accuracy`]). Without one, `classnames` names the classes of the logits' columns.
    """
    if len(logits) != len(dataset):
        raise ValueError(
            f"logits has {len(logits)} rows but the dataset has {len(dataset)}: compute the logits on this split, "
            "in its row order."
        )
    columns = dataset.column_names
    true_feature = dataset.features.get("label")
    if true_feature is not None:
        if not isinstance(true_feature, datasets.ClassLabel):
            raise ValueError(f"The dataset's 'label' column must be a datasets.ClassLabel, got {true_feature!r}.")
        if classnames is not None and list(classnames) != true_feature.names:
            raise ValueError("classnames differ from the class list of the dataset's 'label' column.")
        classnames = true_feature.names
    if classnames is None:
        raise ValueError("The dataset has no 'label' column: pass classnames= the class names of the logits' columns.")
    if logits.shape[-1] != len(classnames):
        raise ValueError(f"logits has {logits.shape[-1]} classes but the class list has {len(classnames)}.")

    indices, pseudo_labels, confidences = select_confident_pseudo_labels(logits, top_k)
    selected = dataset.select(indices.tolist())
    if true_feature is None:
        columns = [*columns, "label"]
    else:
        selected = selected.rename_column("label", TRUE_LABEL)
        columns = [*columns, TRUE_LABEL]
    selected = selected.add_column("label", pseudo_labels.tolist(), feature=datasets.ClassLabel(names=classnames))
    selected = selected.add_column(PSEUDO_CONFIDENCE, confidences.tolist(), feature=datasets.Value("float32"))
    return selected.select_columns([*columns, PSEUDO_CONFIDENCE])


def pseudo_label_accuracy(dataset: datasets.Dataset) -> float:
    """Fraction (0 to 1) of the rows of a [`pseudo_label_dataset`] whose pseudo-label is their true label."""
    if TRUE_LABEL not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {TRUE_LABEL!r} column: pseudo-label a split that has its true labels to measure this."
        )
    if len(dataset) == 0:
        raise ValueError("The pseudo-labelled dataset is empty.")
    return float((np.asarray(dataset["label"]) == np.asarray(dataset[TRUE_LABEL])).mean())


# -- ensemble of prompts ---------------------------------------------------------------------------------------


@strict
class CoOpEnsembleConfig(CoOpConfig):
    r"""Configuration of a [`CoOpEnsemble`]: the settings its members share, plus their number.

    Args:
        num_members (`int`, defaults to 1):
            Number of prompts in the ensemble.
        kwargs: The [`CoOpConfig`] settings of the members.
    """

    model_type = "coop-ensemble"

    num_members: int = 1

    def __post_init__(self, **kwargs):
        if isinstance(self.num_members, bool) or not isinstance(self.num_members, int) or self.num_members < 1:
            raise ValueError(f"num_members must be a positive number of prompts, got {self.num_members!r}.")
        super().__post_init__(**kwargs)

    def member_config(self) -> CoOpConfig:
        """The [`CoOpConfig`] of one member."""
        return CoOpConfig(**{field: getattr(self, field) for field in _MEMBER_FIELDS})


class CoOpEnsemble(CoOpPreTrainedModel):
    """Several CoOp prompts for the same classes on one frozen CLIP; its logits are the mean of theirs.

    Build one from trained [`CoOpModel`]s with `CoOpEnsemble(members)`; they must share the class list, the base
    CLIP and the context layout (n_ctx, class token position, class-specific context). Members sitting on a copy of
    the first member's CLIP (identical weights) are moved onto it, so the ensemble holds one CLIP.
    """

    config: CoOpEnsembleConfig
    config_class = CoOpEnsembleConfig

    def __init__(self, members: Sequence[CoOpModel]):
        members = list(members)
        if not members:
            raise ValueError("A CoOpEnsemble needs at least one CoOpModel.")
        not_coop = [index for index, member in enumerate(members) if not isinstance(member, CoOpModel)]
        if not_coop:
            raise TypeError(f"CoOpEnsemble members must be CoOpModel instances; members {not_coop} are not.")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            _check_compatible(first, member, index)
        for member in members[1:]:
            member.clip = first.clip
        config = CoOpEnsembleConfig(
            **{field: getattr(first.config, field) for field in _MEMBER_FIELDS}, num_members=len(members)
        )
        config.architectures = [type(self).__name__]
        super().__init__(config)
        self.clip = first.clip
        self.members = nn.ModuleList(members)
        self.post_init()

    @property
    def classnames(self) -> list[str]:
        return list(self.config.classnames)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> CoOpOutput | tuple:
        """Mean class logits of the members for `pixel_values` [batch, 3, H, W] or precomputed CLIP `image_embeds`
        [batch, projection_dim] (the image features are computed once for all members). With `labels`, also the
        cross-entropy of the mean logits. `text_embeds` is [members, classes, projection_dim]."""
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("CoOpEnsemble needs pixel_values or precomputed image_embeds.")
            image_embeds = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        outputs = [member(image_embeds=image_embeds) for member in self.members]
        logits = torch.stack([output.logits for output in outputs]).mean(dim=0)
        loss = None
        if labels is not None:
            CoOpModel._check_labels(labels, logits.shape[-1])
            loss = F.cross_entropy(logits.float(), labels)
        output = CoOpOutput(
            loss=loss,
            logits=logits,
            image_embeds=outputs[0].image_embeds,
            text_embeds=torch.stack([output.text_embeds for output in outputs]),
        )
        return output if return_dict is not False else output.to_tuple()

    # -- saving and loading ------------------------------------------------------------------------------------

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """Every member's context, keyed `members.<i>.prompt_learner.ctx` as in the module."""
        return {
            f"members.{index}.{CONTEXT_KEY}": member.prompt_learner.ctx.detach().contiguous()
            for index, member in enumerate(self.members)
        }

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True) -> None:
        """Write config.json (the shared settings and `num_members`), model.safetensors (the members' contexts,
        no CLIP weights) and a model card, atomically as [`CoOpModel.save_pretrained`] does."""
        if not is_main_process:
            return
        with atomic_directory(save_directory) as staging:
            self.config.save_pretrained(staging)
            save_file(self.prompt_state_dict(), staging / PROMPT_WEIGHTS_NAME, metadata={"format": "pt"})
            (staging / "README.md").write_text(render_model_card(self), encoding="utf-8")

    # Same upload flow as a single prompt: it saves through this class's `save_pretrained`.
    push_to_hub = CoOpModel.push_to_hub

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        clip_model: CLIPModel | str | os.PathLike | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: CoOpEnsembleConfig | None = None,
        **kwargs,
    ) -> CoOpEnsemble:
        """Load a saved ensemble and the one CLIP its members share (`clip_model` when given, else the config's
        `base_model_name_or_path`); keyword arguments as for [`CoOpModel.from_pretrained`]."""
        if model_args:
            raise TypeError(f"CoOpEnsemble.from_pretrained takes no extra positional arguments, got {model_args}.")
        hub_kwargs, kwargs = split_pretrained_kwargs(kwargs)
        if config is None:
            config_dict, _ = CoOpEnsembleConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            if config_dict.get("model_type") != CoOpEnsembleConfig.model_type:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a model of type {config_dict.get('model_type')!r}, not "
                    f"a CoOp ensemble ({CoOpEnsembleConfig.model_type!r}): load a single prompt with "
                    "CoOpModel.from_pretrained."
                )
            config = CoOpEnsembleConfig.from_dict(config_dict)
        clip, tokenizer = load_base_clip(config, clip_model, tokenizer, pretrained_model_name_or_path, **kwargs)
        state_dict = load_file(cached_file(pretrained_model_name_or_path, PROMPT_WEIGHTS_NAME, **hub_kwargs))
        expected = {f"members.{index}.{CONTEXT_KEY}" for index in range(config.num_members)}
        if state_dict.keys() != expected:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a CoOp ensemble of {config.num_members} prompts: missing "
                f"{sorted(expected - state_dict.keys())}, unexpected {sorted(state_dict.keys() - expected)}."
            )
        members = []
        for index in range(config.num_members):
            member = CoOpModel(config.member_config(), clip=clip, tokenizer=tokenizer)
            member.load_prompt(
                {CONTEXT_KEY: state_dict[f"members.{index}.{CONTEXT_KEY}"]},
                source=f"{pretrained_model_name_or_path} (member {index})",
            )
            members.append(member)
        return cls(members).eval()


def _check_compatible(first: CoOpModel, member: CoOpModel, index: int) -> None:
    """Raise a `ValueError` naming the first setting or CLIP difference between member `index` and member 0."""
    for field in _SHARED_SETTINGS:
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

"""What every prompt model shares: a frozen contrastive backbone underneath (CLIP, MetaCLIP 2, SigLIP, SigLIP 2,
asked through `coop_hf.backbones`), a few trainable tensors on top, and one save / load / push path that stores
exactly those tensors.

A method (`coop_hf.methods.<name>`) subclasses [`PromptPreTrainedModel`], builds its trainable modules in
`__init__(config, clip, tokenizer)` and writes its forward pass; saving, loading, the Hub, the image processor and
the model card come from here.
"""

from __future__ import annotations

import functools
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import HfApi
from safetensors.torch import load_file
from torch import nn
from transformers import AutoImageProcessor, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput, cached_file
from transformers.utils import logging as hf_logging

from .atomic import atomic_directory
from .backbones import Backbone, backbone_for, default_image_processor, load_backbone
from .hub import CardResults, ModelCardInfo, render_model_card

PROMPT_WEIGHTS_NAME = "model.safetensors"
# Download settings that apply to the prompt repository only, to both it and the base CLIP, and keys that
# `AutoModel.from_pretrained` adds for the model class but that do not concern the base CLIP.
PROMPT_ONLY_HUB_KWARGS = ("revision", "subfolder")
SHARED_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "token")
AUTO_CLASS_KWARGS = ("_from_auto", "trust_remote_code", "adapter_kwargs")


@dataclass
class PromptModelOutput(ModelOutput):
    """Output of a prompt model.

    Args:
        loss: The training loss against `labels`, when labels are given (cross-entropy, plus the method's own
            regulariser if it has one).
        logits: [batch, classes] the backbone's scaled cosine similarities (plus its bias, SigLIP) between images and
            class prompts.
        image_embeds: [batch, projection_dim] L2-normalised image features.
        text_embeds: L2-normalised text features of the class prompts: [classes, projection_dim], or one set per
            image or per ensemble member where the method computes several.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class PromptPreTrainedModel(PreTrainedModel):
    """Base class of the prompt models: a frozen contrastive model (`self.clip`: a `CLIPModel`, `SiglipModel`, ...,
    kept in eval mode and asked through `self.backbone`) plus the method's trainable tensors, which are all that
    `save_pretrained` stores.

    Subclasses set `config_class`, `method_name` and `paper` (title, URL and BibTeX for the model card), declare
    their capabilities (below) and build their modules in `__init__(config, clip, tokenizer)` after calling this
    `__init__`.
    """

    config_class = PretrainedConfig
    base_model_prefix = "prompt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    method_name = "Prompt"
    paper: tuple[str, str, str] = ("", "", "")

    # -- capabilities: what the runners may rely on (declared by each method, never probed) -----------------------
    image_tower_frozen: bool = True
    """The method leaves the backbone's image path untouched, so its image features may come from the image-feature
    cache (precomputed `image_embeds`, `--cached_views`). A method that changes the image tower (deep vision
    prompts, LoRA) declares False: it refuses `image_embeds` and every evaluation runs its own image path."""
    transfers_to_new_classes: bool = False
    """A trained model moves to another class list with `set_classnames` (base-to-new, cross-dataset transfer)."""
    unfitted_classes_zero_shot: bool = False
    """On a class it was not fitted on (base-to-new's new classes, another dataset's), the model is zero-shot CLIP
    (Tip-Adapter's cache and LP++'s prototypes hold only the training classes): tables say so."""
    has_own_loss: bool = False
    """`compute_loss` adds the method's own term to cross-entropy (KgCoOp's regulariser), so `--loss` cannot
    replace it."""

    def __init__(
        self,
        config: PretrainedConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config)
        if not getattr(config, "classnames", None):
            raise ValueError(
                f"{type(config).__name__}.classnames is empty: {type(self).__name__} classifies over the class names."
            )
        self.backbone: Backbone = backbone_for(clip)
        recorded = getattr(config, "backbone_family", None)
        if recorded is not None and recorded != self.backbone.family:
            raise ValueError(
                f"This {self.method_name} prompt was learned on a {recorded} backbone and cannot run on "
                f"{self.backbone.describe()}: give a {recorded} checkpoint (clip_model= / --model_name_or_path)."
            )
        clip.requires_grad_(False)
        clip.eval()
        self.clip = clip
        self.tokenizer = tokenizer
        if image_processor is None:
            image_processor = find_image_processor(clip)
        self.image_processor = None if image_processor is None else self.backbone.image_processor(image_processor)
        # CLIP's weights come from its own checkpoint: never saved with the prompt, and not "missing" when a
        # Trainer checkpoint (prompt only) is loaded back.
        self._keys_to_ignore_on_save = {f"clip.{key}" for key in clip.state_dict()}

    def _init_weights(self, module: nn.Module) -> None:
        # CLIP arrives trained and each method initialises its own tensors: nothing may be re-initialised.
        return

    def train(self, mode: bool = True) -> PromptPreTrainedModel:
        super().train(mode)
        self.clip.eval()  # frozen CLIP keeps dropout off in training, as in the reference
        return self

    @property
    def classnames(self) -> list[str]:
        return list(self.config.classnames)

    @classmethod
    def resolve_settings(cls, tokenizer: PreTrainedTokenizerBase, settings: dict[str, Any]) -> dict[str, Any]:
        """The given settings as the config will hold them (e.g. CoOp's `n_ctx` from its `ctx_init`)."""
        return settings

    @classmethod
    def build_config(
        cls, clip: PreTrainedModel, classnames: list[str], tokenizer: PreTrainedTokenizerBase, **settings
    ) -> PretrainedConfig:
        """The config `from_clip` gives for these settings (left out or None: the config's defaults), without
        building the model: what a run records before any work."""
        given = {key: value for key, value in settings.items() if value is not None}
        settings = cls.resolve_settings(tokenizer, given)
        return cls.config_class(
            base_model_name_or_path=clip.name_or_path or None,
            backbone_family=backbone_for(clip).family,
            classnames=list(classnames),
            **settings,
        )

    @classmethod
    def from_clip(
        cls,
        clip: PreTrainedModel | str | os.PathLike,
        classnames: list[str],
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        image_processor: Any | None = None,
        **settings,
    ) -> PromptPreTrainedModel:
        """A new model of this method for `classnames` on a contrastive backbone (a loaded `CLIPModel`,
        `MetaClip2Model`, `SiglipModel` or `Siglip2Model`, or a Hub id / local path of one); `settings` are the
        config's own settings (`config_class.prompt_settings()`), the config's defaults when left out."""
        clip, tokenizer = load_backbone(clip, tokenizer)
        config = cls.build_config(clip, classnames, tokenizer, **settings)
        return cls(config, clip=clip, tokenizer=tokenizer, image_processor=image_processor)

    @staticmethod
    def check_labels(labels: torch.Tensor, num_classes: int) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"Labels must lie in [0, {num_classes}) for this model's {num_classes} classes, got values from "
                f"{int(labels.min())} to {int(labels.max())}: the dataset's class list does not match the model's."
            )

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, text_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """The training loss: the cross-entropy of the logits, in fp32 (methods add their regularisers here; the
        runner's `--loss` replaces it where a method adds none)."""
        return F.cross_entropy(logits.float(), labels)

    def classification_output(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        return_dict: bool | None,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **embeds: torch.Tensor,
    ) -> PromptModelOutput | tuple:
        """What `forward` returns: the logits, the `embeds` and, with `labels` (checked against the classes), the
        loss `loss_function(logits, labels)` (default: the cross-entropy, in fp32)."""
        loss = None
        if labels is not None:
            self.check_labels(labels, logits.shape[-1])
            loss = loss_function(logits, labels) if loss_function else F.cross_entropy(logits.float(), labels)
        output = PromptModelOutput(loss=loss, logits=logits, **embeds)
        return output if return_dict is not False else output.to_tuple()

    def set_classnames(self, classnames: list[str]) -> None:
        """Move the model to another class list; refused unless the method declares `transfers_to_new_classes`."""
        raise ValueError(
            f"A {type(self).__name__} cannot move to another class list ({len(self.config.classnames)} classes "
            f"trained, {len(classnames)} in the dataset): evaluate it on the dataset it was trained on (--dataset)."
        )

    def image_features(
        self,
        pixel_values: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone's (unnormalised) image features: `image_embeds` when given (only for a method whose
        `image_tower_frozen`), else encoded from `pixel_values`: [batch, 3, H, W] images, or a SigLIP 2 NaFlex
        processor's patches [batch, patches, patch_dim] with their `pixel_attention_mask` and `spatial_shapes`
        (each image at its own aspect ratio), as `Siglip2Model` takes them."""
        if image_embeds is not None:
            if not self.image_tower_frozen:
                raise ValueError(
                    f"{type(self).__name__} changes the image tower, so precomputed image_embeds (the image-feature "
                    "cache, --cached_views) would miss its change: pass pixel_values."
                )
            return image_embeds
        if pixel_values is None:
            raise ValueError(f"{type(self).__name__} needs pixel_values or precomputed image_embeds.")
        return self.backbone.image_features(
            pixel_values, pixel_attention_mask=pixel_attention_mask, spatial_shapes=spatial_shapes
        )

    # -- what is saved ---------------------------------------------------------------------------------------------

    saved_buffers: tuple[str, ...] = ()
    """Buffers saved with the prompt tensors (Tip-Adapter's cache labels): fitted, not trained."""

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter that is not CLIP's, keyed by its module name (and the `saved_buffers`): exactly what the
        method learns."""
        clip_parameters = {id(parameter) for parameter in self.clip.parameters()}
        state = {
            name: parameter.detach().contiguous()
            for name, parameter in self.named_parameters()
            if id(parameter) not in clip_parameters
        }
        return state | {name: self.get_buffer(name).contiguous() for name in self.saved_buffers}

    def describe_prompt(self) -> str:
        """The settings that fix the shapes of the saved tensors, for error messages."""
        return f"{len(self.config.classnames)} classes, text width {self.backbone.text_width}"

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Copy saved prompt tensors into this model, refusing any missing, extra or mis-shaped tensor."""
        expected = self.prompt_state_dict()
        missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
        if missing or unexpected:
            raise ValueError(
                f"{source} is not a {self.method_name} prompt for this model: missing {sorted(missing)}, unexpected "
                f"{sorted(unexpected)}."
            )
        for key, target in expected.items():
            if state_dict[key].shape != target.shape:
                raise ValueError(
                    f"{source} holds {key} of shape {tuple(state_dict[key].shape)} but this model expects "
                    f"{tuple(target.shape)} ({self.describe_prompt()}). Was it learned on another CLIP or class list?"
                )
        tensors = dict(self.named_parameters()) | {name: self.get_buffer(name) for name in self.saved_buffers}
        with torch.no_grad():
            for key in expected:
                tensors[key].copy_(state_dict[key])
        self.prompt_changed()

    def prompt_changed(self) -> None:
        """Called after the prompt tensors or the class list changed outside training (drop cached features)."""

    # -- saving, the Hub and loading ---------------------------------------------------------------------------

    def card_info(self) -> ModelCardInfo:
        """What the model card says about this model (its settings); subclasses add their own rows."""
        return ModelCardInfo(
            class_name=type(self).__name__,
            method_name=self.method_name,
            paper=self.paper,
            base_model=self.config.base_model_name_or_path,
            classnames=self.classnames,
            prompt_bytes=sum(tensor.numel() * tensor.element_size() for tensor in self.prompt_state_dict().values()),
            settings=self.card_settings(),
        )

    def card_settings(self) -> list[tuple[str, str]]:
        """(setting, value) rows of the model card's prompt table."""
        return []

    def save_extra_files(self, folder: str | os.PathLike) -> None:
        """Files a method writes beside the prompt in `save_pretrained` (CLIP-LoRA: `peft`'s adapter files)."""

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        push_to_hub: bool = False,
        *,
        card_results: CardResults | None = None,
        **kwargs,
    ) -> None:
        """Write config.json, a model.safetensors holding only the prompt tensors, the base CLIP's image processor
        config (so `pipeline("image-classification", model=<folder>)` needs nothing else) and a model card
        (README.md, with `card_results` when given).

        The files are written to a temporary folder and moved into place one by one, so an interrupted save never
        leaves a half-written prompt. A full `state_dict` (as `Trainer` passes it) is saved without CLIP's weights.
        """
        if not is_main_process:
            return
        if state_dict is None:
            state_dict = self.prompt_state_dict()
        repo_id = kwargs.pop("repo_id", None)
        with atomic_directory(save_directory) as staging, quiet_progress_bars():
            super().save_pretrained(staging, state_dict=state_dict, **kwargs)
            if self.image_processor is not None:
                self.image_processor.save_pretrained(staging)
            self.save_extra_files(staging)
            card = render_model_card(self.card_info(), results=card_results, repo_id=repo_id)
            (staging / "README.md").write_text(card, encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(repo_id or os.path.basename(os.path.abspath(save_directory)), card_results=card_results)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        card_results: CardResults | None = None,
        **kwargs,
    ) -> str:
        """Upload the prompt folder (config, prompt tensors, image processor config, model card) to the Hub;
        returns the commit URL."""
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, card_results=card_results, repo_id=repo_id)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {self.method_name} prompt",
                revision=revision,
                create_pr=create_pr,
            )
        return str(commit)

    @classmethod
    def from_saved_config(
        cls, config: PretrainedConfig, clip: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any
    ) -> PromptPreTrainedModel:
        """The model of a saved config, with freshly initialised prompt tensors (`from_pretrained` fills them)."""
        return cls(config, clip=clip, tokenizer=tokenizer, image_processor=image_processor)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        clip_model: PreTrainedModel | str | os.PathLike | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: PretrainedConfig | None = None,
        **kwargs,
    ) -> PromptPreTrainedModel:
        """Load a saved prompt and the backbone it sits on.

        The backbone is `clip_model` when given (a loaded model of the prompt's family, a Hub id or a local path),
        otherwise the `base_model_name_or_path` of the prompt's config; another family is refused. Remaining keyword
        arguments go to the Hub download (`token`, `cache_dir`, ...; `revision` and `subfolder` concern the prompt
        repository only) and to the backbone's `from_pretrained` (e.g. `dtype`).
        """
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes no extra positional arguments, got {model_args}.")
        hub_kwargs, kwargs = split_pretrained_kwargs(kwargs)
        if config is None:
            config = load_config(cls.config_class, pretrained_model_name_or_path, **hub_kwargs)
        clip, tokenizer = load_base_clip(config, clip_model, tokenizer, pretrained_model_name_or_path, **kwargs)
        image_processor = find_image_processor(pretrained_model_name_or_path, **hub_kwargs) or find_image_processor(
            clip
        )
        model = cls.from_saved_config(config, clip, tokenizer, image_processor)
        weights_file = cached_file(pretrained_model_name_or_path, PROMPT_WEIGHTS_NAME, **hub_kwargs)
        model.load_prompt(load_file(weights_file), source=str(pretrained_model_name_or_path))
        model.eval()
        return model


class TextFeatureClassifier(PromptPreTrainedModel, ABC):
    """A prompt model whose logits are the backbone's scaled cosine similarities (+ bias) between the image features
    and its class text features (`get_text_features`): CoOp and the methods built on it, TEnc-FT.

    The text features are computed once and reused while no gradient is needed and neither the tensors they depend
    on (`text_prompt_tensors`) nor the class tokens (`class_token_ids`) changed.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        self._text_features_cache: tuple[tuple, torch.Tensor] | None = None

    @abstractmethod
    def get_text_features(self) -> torch.Tensor:
        """[classes, projection_dim] unnormalised text features of the class prompts."""

    @abstractmethod
    def text_prompt_tensors(self) -> list[torch.Tensor]:
        """The learned tensors the text features depend on (what the cached text features are keyed by)."""

    @abstractmethod
    def class_token_ids(self) -> torch.Tensor:
        """The token ids of the class prompts (they change with the class list)."""

    def train(self, mode: bool = True) -> TextFeatureClassifier:
        super().train(mode)
        self.prompt_changed()
        return self

    def prompt_changed(self) -> None:
        self._text_features_cache = None

    def _text_features_for_logits(self) -> torch.Tensor:
        """Text features, computed once and reused while the prompt is unchanged and no gradient is needed."""
        if torch.is_grad_enabled():
            return self.get_text_features()
        key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in self.text_prompt_tensors())
        key += (self.class_token_ids().data_ptr(),)
        if self._text_features_cache is None or self._text_features_cache[0] != key:
            self._text_features_cache = (key, self.get_text_features())
        return self._text_features_cache[1]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Class logits of images: `pixel_values` [batch, 3, H, W], or precomputed backbone `image_embeds`
        [batch, projection_dim]. With `labels` [batch], also the training loss (`compute_loss`)."""
        image_embeds = F.normalize(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes), dim=-1
        )
        text_embeds = F.normalize(self._text_features_for_logits(), dim=-1)
        logits = self.backbone.logits(image_embeds, text_embeds)
        loss_function = functools.partial(self.compute_loss, text_embeds=text_embeds)
        return self.classification_output(
            logits, labels, return_dict, loss_function, image_embeds=image_embeds, text_embeds=text_embeds
        )


def rows_among(names: list[str], among: list[str] | None) -> torch.Tensor:
    """[names] the index of each name in `among`, -1 for a name not in it: where a class's fitted tensors sit when
    the class list moved (a method fitted on some classes keeps them by name)."""
    index = {name: row for row, name in enumerate(among or [])}
    return torch.tensor([index.get(name, -1) for name in names], dtype=torch.long)


@contextmanager
def quiet_progress_bars():
    """transformers' own progress bars ("Writing model shards") off inside the block: a prompt is one small file,
    and its bar would break into the training bar at every checkpoint."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_config(config_class: type[PretrainedConfig], source: str | os.PathLike, **hub_kwargs) -> PretrainedConfig:
    """The saved config, refused with a clear error when it belongs to another kind of prompt model."""
    config_dict, _ = config_class.get_config_dict(source, **hub_kwargs)
    found = config_dict.get("model_type")
    if found != config_class.model_type:
        loader = next(iter(config_dict.get("architectures") or []), None)
        loader = f"{loader}.from_pretrained or " if loader else ""
        raise ValueError(
            f"{source} holds a model of type {found!r}, not {config_class.model_type!r}: load it with {loader}"
            "AutoModel.from_pretrained (after `coop_hf.load_methods()`)."
        )
    return config_class.from_dict(config_dict)


def split_pretrained_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Split `from_pretrained` keyword arguments into (download settings for the prompt repository, keyword
    arguments for the base CLIP's `from_pretrained`)."""
    kwargs = {key: value for key, value in kwargs.items() if key not in AUTO_CLASS_KWARGS}
    shared = {key: kwargs[key] for key in SHARED_HUB_KWARGS if key in kwargs}
    return shared | {key: kwargs.pop(key) for key in PROMPT_ONLY_HUB_KWARGS if key in kwargs}, kwargs


def find_image_processor(source: PreTrainedModel | str | os.PathLike, **hub_kwargs) -> Any | None:
    """The image processor saved beside a checkpoint (a folder, Hub id, or the folder a model was loaded from), or
    None when there is none (e.g. a model built from a config)."""
    if isinstance(source, PreTrainedModel) and (own := default_image_processor(source)) is not None:
        return own  # open_clip: the checkpoint's preprocessing, from its config
    path = source.name_or_path if isinstance(source, PreTrainedModel) else source
    if not path:
        return None
    try:
        return AutoImageProcessor.from_pretrained(path, **hub_kwargs)
    except (OSError, ValueError):
        return None


def load_base_clip(
    config: PretrainedConfig,
    clip_model: PreTrainedModel | str | os.PathLike | None,
    tokenizer: PreTrainedTokenizerBase | None,
    source: str | os.PathLike,
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The backbone a saved prompt sits on: `clip_model` when given, else the config's `base_model_name_or_path`."""
    base = clip_model if clip_model is not None else config.base_model_name_or_path
    if base is None:
        raise ValueError(
            f"The prompt at {source} does not name its base CLIP (config.base_model_name_or_path is empty): "
            "pass clip_model=<a loaded model, Hub id or path> (--model_name_or_path)."
        )
    return load_backbone(base, tokenizer, **from_pretrained_kwargs)

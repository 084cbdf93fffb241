"""CoOp: learned prompt context in front of a frozen CLIP (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022).

The whole computation, top to bottom:
1. `PromptLearner` writes the learned context vectors into the token embeddings of every class prompt.
2. `CoOpModel.get_text_features` runs those embeddings through CLIP's own text modules (position embeddings,
   causal encoder, final layer norm, pooling at the end-of-text token, text projection).
3. `CoOpModel.forward` compares them with CLIP's image features: scaled cosine similarities are the logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, CLIPModel, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput, cached_file

from .atomic import atomic_directory
from .configuration_coop import CoOpConfig, check_classnames
from .hub import render_model_card
from .prompts import PromptTokens, context_init_ids, resolve_n_ctx, tokenize_prompts
from .text_encoding import encode_prompts

PROMPT_WEIGHTS_NAME = "model.safetensors"
CONTEXT_KEY = "prompt_learner.ctx"
# Download settings that apply to the prompt repository only, to both it and the base CLIP, and keys that
# `AutoModel.from_pretrained` adds for the model class but that do not concern the base CLIP.
PROMPT_ONLY_HUB_KWARGS = ("revision", "subfolder")
SHARED_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "token")
AUTO_CLASS_KWARGS = ("_from_auto", "trust_remote_code", "adapter_kwargs")


@dataclass
class CoOpOutput(ModelOutput):
    """Output of [`CoOpModel`].

    Args:
        loss: Cross-entropy of the logits against `labels`, when labels are given.
        logits: [batch, classes] CLIP's scaled cosine similarities between images and class prompts.
        image_embeds: [batch, projection_dim] L2-normalised image features.
        text_embeds: [classes, projection_dim] L2-normalised text features of the class prompts.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


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


class CoOpPreTrainedModel(PreTrainedModel):
    config: CoOpConfig
    config_class = CoOpConfig
    base_model_prefix = "coop"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module: nn.Module) -> None:
        # CLIP arrives trained and the context is initialised by `CoOpModel` itself: nothing may be re-initialised.
        return


class CoOpModel(CoOpPreTrainedModel):
    """A frozen `CLIPModel` whose class prompts carry learned context vectors.

    Build one with [`CoOpModel.from_clip`], load a saved prompt with [`CoOpModel.from_pretrained`]. Only
    `prompt_learner.ctx` trains; every CLIP parameter is frozen and CLIP stays in eval mode (dropout off).
    """

    def __init__(self, config: CoOpConfig, clip: CLIPModel, tokenizer: PreTrainedTokenizerBase):
        super().__init__(config)
        if not config.classnames:
            raise ValueError("CoOpConfig.classnames is empty: a CoOp model needs the list of class names.")
        clip.requires_grad_(False)
        clip.eval()
        self.clip = clip
        self.tokenizer = tokenizer
        width = clip.config.text_config.hidden_size
        if config.ctx_init is not None:
            init_ids = context_init_ids(tokenizer, config.ctx_init)
            if len(init_ids) != config.n_ctx:
                raise ValueError(
                    f"ctx_init={config.ctx_init!r} is {len(init_ids)} BPE tokens but n_ctx={config.n_ctx}: the "
                    "context length is the phrase's token count. Set n_ctx to it or change the phrase."
                )
            token_embedding = clip.text_model.embeddings.token_embedding
            ctx = token_embedding(torch.tensor(init_ids, device=token_embedding.weight.device)).detach()
        else:
            shape = (len(config.classnames),) if config.class_specific_context else ()
            ctx = torch.randn(*shape, config.n_ctx, width) * 0.02
        self.prompt_learner = PromptLearner(ctx.float(), self._tokenize(config.classnames))
        self._text_features_cache: tuple[tuple, torch.Tensor] | None = None
        self.post_init()
        # CLIP's weights come from its own checkpoint: never saved with the prompt, and not "missing" when a
        # Trainer checkpoint (prompt only) is loaded back.
        self._keys_to_ignore_on_save = {f"clip.{key}" for key in clip.state_dict()}

    @classmethod
    def from_clip(
        cls,
        clip: CLIPModel | str | os.PathLike,
        classnames: list[str],
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        n_ctx: int | None = None,
        ctx_init: str | None = None,
        class_token_position: str = "end",
        class_specific_context: bool = False,
    ) -> CoOpModel:
        """Wrap a CLIP (a loaded `CLIPModel`, or a Hub id / local path) with a new prompt for `classnames`.

        With `ctx_init`, the context starts as that phrase's token embeddings and its BPE token count is the
        context length, so the untrained model reproduces CLIP on the hand-written prompt exactly; `n_ctx` (default
        16 without a phrase) may be left out then, and an `n_ctx` that contradicts the phrase is an error.
        """
        clip, tokenizer = load_clip_and_tokenizer(clip, tokenizer)
        config = CoOpConfig(
            base_model_name_or_path=clip.name_or_path or None,
            classnames=list(classnames),
            n_ctx=resolve_n_ctx(tokenizer, n_ctx, ctx_init),
            ctx_init=ctx_init,
            class_token_position=class_token_position,
            class_specific_context=class_specific_context,
        )
        return cls(config, clip=clip, tokenizer=tokenizer)

    def _tokenize(self, classnames: list[str]) -> PromptTokens:
        return tokenize_prompts(
            self.tokenizer,
            classnames,
            n_ctx=self.config.n_ctx,
            ctx_init=self.config.ctx_init,
            class_token_position=self.config.class_token_position,
            max_length=self.clip.config.text_config.max_position_embeddings,
        )

    def train(self, mode: bool = True) -> CoOpModel:
        super().train(mode)
        self.clip.eval()  # frozen CLIP keeps dropout off in training, as in the reference
        self._text_features_cache = None
        return self

    @property
    def classnames(self) -> list[str]:
        return list(self.config.classnames)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move a unified context to a new class list: only the class-name tokens change."""
        if self.prompt_learner.class_specific:
            raise ValueError(
                "This prompt has class-specific context (one context per training class), which cannot move to "
                "a new class list. Only a unified context (class_specific_context=False) transfers."
            )
        check_classnames(classnames)
        self.prompt_learner.set_tokens(self._tokenize(list(classnames)))
        self.config.classnames = list(classnames)
        self.config.id2label = dict(enumerate(classnames))
        self.config.label2id = {name: index for index, name in self.config.id2label.items()}
        self._text_features_cache = None

    def get_text_features(self, *, chunk_size: int | None = None, checkpoint: bool = False) -> torch.Tensor:
        """[classes, projection_dim] unnormalised text features of the current prompts, exactly as
        `CLIPModel.get_text_features` returns them for the equivalent text.

        The shared [SOS] + context prefix is encoded once where the layout allows (`text_encoding.encode_prompts`);
        `chunk_size` (classes per pass) and `checkpoint` (recompute activations in backward) only save memory.
        """
        return encode_prompts(self.clip, self.prompt_learner, chunk_size=chunk_size, checkpoint=checkpoint)

    def _text_features_for_logits(self) -> torch.Tensor:
        """Text features, computed once and reused while the context is unchanged and no gradient is needed."""
        if torch.is_grad_enabled():
            return self.get_text_features()
        ctx = self.prompt_learner.ctx
        key = (ctx._version, ctx.data_ptr(), ctx.device, ctx.dtype, self.prompt_learner.input_ids.data_ptr())
        if self._text_features_cache is None or self._text_features_cache[0] != key:
            self._text_features_cache = (key, self.get_text_features())
        return self._text_features_cache[1]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> CoOpOutput | tuple:
        """Class logits of images: `pixel_values` [batch, 3, H, W], or precomputed CLIP `image_embeds`
        [batch, projection_dim]. With `labels` [batch], also the cross-entropy loss."""
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("CoOpModel needs pixel_values or precomputed image_embeds.")
            image_embeds = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        text_embeds = self._text_features_for_logits()
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
        logits = self.clip.logit_scale.exp() * image_embeds @ text_embeds.to(image_embeds.dtype).t()

        loss = None
        if labels is not None:
            self._check_labels(labels, logits.shape[-1])
            loss = F.cross_entropy(logits.float(), labels)
        output = CoOpOutput(loss=loss, logits=logits, image_embeds=image_embeds, text_embeds=text_embeds)
        return output if return_dict is not False else output.to_tuple()

    @staticmethod
    def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"Labels must lie in [0, {num_classes}) for this model's {num_classes} classes, got values from "
                f"{int(labels.min())} to {int(labels.max())}: the dataset's class list does not match the model's."
            )

    # -- saving and loading ------------------------------------------------------------------------------------

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """The state that defines the prompt: the context only (CLIP comes from its own checkpoint)."""
        return {CONTEXT_KEY: self.prompt_learner.ctx.detach()}

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """Write config.json, a prompt-only model.safetensors and a model card (README.md).

        The files are written to a temporary folder and moved into place one by one, so an interrupted save
        never leaves a half-written prompt. A full `state_dict` (as `Trainer` passes it) is saved without CLIP's
        weights.
        """
        if not is_main_process:
            return
        if state_dict is None:
            state_dict = self.prompt_state_dict()
        repo_id = kwargs.pop("repo_id", None)
        with atomic_directory(save_directory) as staging:
            super().save_pretrained(staging, state_dict=state_dict, **kwargs)
            (staging / "README.md").write_text(render_model_card(self), encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(
                repo_id or os.path.basename(os.path.abspath(save_directory)), token=kwargs.get("token")
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        **kwargs,
    ) -> str:
        """Upload the prompt folder (config, prompt weights, model card) to the Hub; returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or "Upload CoOp prompt",
                revision=revision,
                create_pr=create_pr,
            )
        return str(commit)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        clip_model: CLIPModel | str | os.PathLike | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: CoOpConfig | None = None,
        **kwargs,
    ) -> CoOpModel:
        """Load a saved prompt and the CLIP it sits on.

        The base CLIP is `clip_model` when given (a loaded `CLIPModel`, a Hub id or a local path), otherwise the
        `base_model_name_or_path` of the prompt's config. Remaining keyword arguments go to the Hub download
        (`token`, `cache_dir`, ...; `revision` and `subfolder` concern the prompt repository only) and to
        `CLIPModel.from_pretrained` (e.g. `dtype`).
        """
        if model_args:
            raise TypeError(
                f"CoOpModel.from_pretrained takes no extra positional arguments, got {model_args}."
            )
        hub_kwargs, kwargs = split_pretrained_kwargs(kwargs)
        if config is None:
            config = CoOpConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        clip, tokenizer = load_base_clip(config, clip_model, tokenizer, pretrained_model_name_or_path, **kwargs)
        model = cls(config, clip=clip, tokenizer=tokenizer)
        weights_file = cached_file(pretrained_model_name_or_path, PROMPT_WEIGHTS_NAME, **hub_kwargs)
        model.load_prompt(load_file(weights_file), source=str(pretrained_model_name_or_path))
        model.eval()
        return model

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Copy a saved context into this model, refusing any missing, extra or mis-shaped tensor."""
        expected = self.prompt_state_dict()
        missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
        if missing or unexpected:
            raise ValueError(
                f"{source} is not a CoOp prompt for this model: missing {sorted(missing)}, unexpected "
                f"{sorted(unexpected)}."
            )
        for key, target in expected.items():
            if state_dict[key].shape != target.shape:
                raise ValueError(
                    f"{source} holds {key} of shape {tuple(state_dict[key].shape)} but this model expects "
                    f"{tuple(target.shape)} ({len(self.config.classnames)} classes, n_ctx={self.config.n_ctx}, "
                    f"text width {self.clip.config.text_config.hidden_size}, class-specific="
                    f"{self.config.class_specific_context}). Was it learned on another CLIP or class list?"
                )
        with torch.no_grad():
            self.prompt_learner.ctx.copy_(state_dict[CONTEXT_KEY])


def split_pretrained_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Split `from_pretrained` keyword arguments into (download settings for the prompt repository, keyword
    arguments for the base CLIP's `from_pretrained`)."""
    kwargs = {key: value for key, value in kwargs.items() if key not in AUTO_CLASS_KWARGS}
    shared = {key: kwargs[key] for key in SHARED_HUB_KWARGS if key in kwargs}
    return shared | {key: kwargs.pop(key) for key in PROMPT_ONLY_HUB_KWARGS if key in kwargs}, kwargs


def load_base_clip(
    config: CoOpConfig,
    clip_model: CLIPModel | str | os.PathLike | None,
    tokenizer: PreTrainedTokenizerBase | None,
    source: str | os.PathLike,
    **from_pretrained_kwargs,
) -> tuple[CLIPModel, PreTrainedTokenizerBase]:
    """The CLIP a saved prompt sits on: `clip_model` when given, else the config's `base_model_name_or_path`."""
    base = clip_model if clip_model is not None else config.base_model_name_or_path
    if base is None:
        raise ValueError(
            f"The prompt at {source} does not name its base CLIP (config.base_model_name_or_path is empty): "
            "pass clip_model=<CLIPModel, Hub id or path>."
        )
    return load_clip_and_tokenizer(base, tokenizer, **from_pretrained_kwargs)


def load_clip_and_tokenizer(
    clip: CLIPModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **from_pretrained_kwargs,
) -> tuple[CLIPModel, PreTrainedTokenizerBase]:
    """Resolve a CLIP given as a model or an id/path, and its tokenizer (loaded from the same place if absent)."""
    if not isinstance(clip, CLIPModel):
        if not isinstance(clip, (str, os.PathLike)):
            raise TypeError(
                f"clip must be a transformers CLIPModel or a Hub id / local path, got {type(clip)}."
            )
        try:
            clip = CLIPModel.from_pretrained(clip, **from_pretrained_kwargs)
        except OSError as error:
            raise OSError(
                f"Could not load the base CLIP {str(clip)!r}: {error}\nPass clip_model= a loaded CLIPModel or a "
                "local path to it (offline, the Hub id must already be in the Hugging Face cache)."
            ) from error
    if tokenizer is None:
        if not clip.name_or_path:
            raise ValueError(
                "This CLIPModel was not loaded from a checkpoint, so its tokenizer cannot be found: pass tokenizer=."
            )
        tokenizer = AutoTokenizer.from_pretrained(clip.name_or_path)
    return clip, tokenizer

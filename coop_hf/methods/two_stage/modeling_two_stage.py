"""2SFS: Two-Stage Few-Shot adaptation (Farina et al., "Rethinking Few-Shot Adaptation of Vision-Language Models in
Two Stages", CVPR 2025).

One fixed budget of steps in two stages. Stage one tunes the LayerNorms of the transformer layers of both towers
(injected with `peft`'s LayerNorm tuning into the model's own copy of the backbone) with the usual image-to-class-
prompt cross-entropy, the text features of every class recomputed each step. Stage two freezes them and trains a
linear classifier on the adapted image features, its rows starting as the adapted text features of the class prompts;
logits are the backbone's scale x the cosine between image features and the normalised rows. At inference the model
selects per class (selective inference): a class the classifier was trained on takes its row, any other class the
adapted text tower's features, so base-to-new and cross-dataset transfer need nothing more.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft import LNTuningConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...modeling_utils import TextFeatureClassifier, rows_among
from ...text_encoding import encode_prompts, shared_prefix_length
from .configuration_two_stage import TwoStageConfig

TWO_STAGE_PAPER = (
    "Farina et al., Rethinking Few-Shot Adaptation of Vision-Language Models in Two Stages, CVPR 2025",
    "https://arxiv.org/abs/2503.11609",
    """@inproceedings{farina2025rethinking,
  title     = {Rethinking Few-Shot Adaptation of Vision-Language Models in Two Stages},
  author    = {Farina, Matteo and Mancini, Massimiliano and Iacca, Giovanni and Ricci, Elisa},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2025}
}""",
)
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
LN_TUNING_KEY = "ln_tuning_layers"


class TwoStageModel(TextFeatureClassifier):
    """A contrastive model with `peft`-tuned LayerNorms (stage one) and a linear classifier over the classes it was
    trained on (stage two), which the adapted text tower completes for any other class.

    Trained and saved: the tuned LayerNorms' weights and biases (model.safetensors, and `peft`'s own
    adapter_config.json + adapter_model.safetensors, so that `PeftModel.from_pretrained(clip, folder)` loads the
    stage-one backbone) and the classifier's rows.

    Example:

    ```python
    >>> from coop_hf import TwoStageModel

    >>> model = TwoStageModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])
    >>> # ... trained by TwoStageTrainer: LayerNorms for 60% of the steps, then the classifier
    >>> model.set_classnames(["daisy", "rose", "tulip"])  # daisy, rose: classifier rows; tulip: the text tower
    >>> logits = model(pixel_values=pixel_values).logits
    ```
    """

    config: TwoStageConfig
    config_class = TwoStageConfig
    method_name = "2SFS"
    paper = TWO_STAGE_PAPER
    image_tower_frozen = False
    transfers_to_new_classes = True

    def __init__(
        self,
        config: TwoStageConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, copy.deepcopy(clip), tokenizer, image_processor)
        self.post_init()
        self.ln_config = self.peft_config(config)
        with warnings.catch_warnings():  # peft warns that it cannot read in/out features off a LayerNorm
            warnings.filterwarnings("ignore", message="Unsupported layer type")
            inject_adapter_in_model(self.ln_config, self.clip)
        self._keys_to_ignore_on_save = {f"clip.{key}" for key in self.clip.state_dict() if LN_TUNING_KEY not in key}
        rows = len(config.fitted_classnames or config.classnames)
        self.classifier = nn.Parameter(self._new_classifier(rows))
        self._set_class_tokens(config.classnames)
        self._set_trainable()

    def peft_config(self, config: TwoStageConfig) -> LNTuningConfig:
        """`peft`'s LayerNorm-tuning config of these settings: every LayerNorm inside the chosen towers'
        transformer layers from the start layer on, named in full. As in the official code, the embeddings' and
        the final LayerNorms (CLIP's ln_pre, ln_post, ln_final) stay frozen: its selection lists them twice, the
        second time as outside any block, which freezes them again."""
        towers = {
            "text": (self.backbone.text_layers, config.ln_text_start),
            "vision": (self.backbone.vision_layers, config.ln_vision_start),
        }
        chosen = towers if config.ln_encoder == "both" else {config.ln_encoder: towers[config.ln_encoder]}
        names = {id(module): name for name, module in self.clip.named_modules()}
        targets = []
        for layers, start in chosen.values():
            for layer in list(layers)[start:]:
                targets += [names[id(m)] for m in layer.modules() if isinstance(m, nn.LayerNorm) and id(m) in names]
        if not targets:
            raise ValueError(
                f"2SFS tunes the LayerNorms of the transformer layers, and {config.ln_encoder} "
                f"(--ln_encoder) from layer {config.ln_vision_start} / {config.ln_text_start} (--ln_vision_start, "
                f"--ln_text_start) selects none of {self.backbone.describe()}: choose earlier start layers."
            )
        return LNTuningConfig(target_modules=targets, base_model_name_or_path=config.base_model_name_or_path)

    def _new_classifier(self, rows: int) -> torch.Tensor:
        """Zero rows (stage two fills them), in float32 as the official `classifier` on any backbone dtype."""
        return torch.zeros(rows, self.backbone.embed_dim, device=self.backbone.device, dtype=torch.float32)

    @property
    def second_stage(self) -> bool:
        """Whether the classifier is trained (from stage two on): only it is then trainable."""
        return self.config.fitted_classnames is not None

    def layer_norm_parameters(self) -> list[nn.Parameter]:
        """The tuned LayerNorms' weights and biases (stage one's parameters)."""
        return [parameter for name, parameter in self.clip.named_parameters() if LN_TUNING_KEY in name]

    def _set_trainable(self) -> None:
        self.clip.requires_grad_(False)
        for parameter in self.layer_norm_parameters():
            parameter.requires_grad_(not self.second_stage)
        self.classifier.requires_grad_(self.second_stage)

    def _set_class_tokens(self, classnames: list[str]) -> None:
        inputs = self.backbone.tokenize(self.tokenizer, [self.config.template.format(name) for name in classnames])
        input_ids = inputs["input_ids"].to(self.backbone.device)
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer(
            "eot_positions", self.backbone.pool_positions(input_ids, self.tokenizer.eos_token_id), persistent=False
        )
        mask = inputs.get("attention_mask") if self.backbone.pad_prompts else None  # SigLIP's padding
        self.register_buffer("attention_mask", None if mask is None else mask.to(input_ids.device), persistent=False)
        no_context = input_ids.new_zeros((len(input_ids), 0))
        self.prefix_length = shared_prefix_length(input_ids, no_context, self.eot_positions, class_specific=False)
        rows = rows_among(classnames, self.config.fitted_classnames)
        self.register_buffer("classifier_rows", rows.to(input_ids.device), persistent=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: a class the classifier was trained on keeps its row, any other takes the
        adapted text tower's features of its class prompt (selective inference)."""
        self.config.set_classnames(classnames)
        if not self.second_stage:  # no trained rows yet: stage two starts on the current class list
            self.classifier = nn.Parameter(self._new_classifier(len(classnames)), requires_grad=False)
        self._set_class_tokens(self.classnames)
        self.prompt_changed()

    def encode_class_prompts(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """[classes, projection_dim] unnormalised text features of the class prompts (those where the boolean mask
        `classes` is True) through the adapted text tower."""
        input_ids, eot, mask = self.input_ids, self.eot_positions, self.attention_mask
        if classes is not None:
            input_ids, eot, mask = input_ids[classes], eot[classes], None if mask is None else mask[classes]
        embeds = self.backbone.token_embedding(input_ids)
        return encode_prompts(self.backbone, embeds, eot, self.prefix_length, attention_mask=mask)

    def get_text_features(self) -> torch.Tensor:
        """[classes, projection_dim] class weights (normalised by `forward`): the classifier's rows for the classes it
        was trained on, the adapted text features of the class prompts for the others (all of them in stage one)."""
        rows = self.classifier_rows
        known = rows >= 0
        if not self.second_stage or not bool(known.any()):
            return self.encode_class_prompts()
        if bool(known.all()):
            return self.classifier[rows]
        unknown = ~known
        weights = torch.cat([self.classifier[rows[known]], self.encode_class_prompts(unknown).to(self.classifier)])
        order = torch.cat([known.nonzero(), unknown.nonzero()]).squeeze(1)
        return weights[order.argsort()]

    def text_prompt_tensors(self) -> list[torch.Tensor]:
        return [*self.layer_norm_parameters(), self.classifier]

    def class_token_ids(self) -> torch.Tensor:
        return self.input_ids

    @torch.no_grad()
    def start_second_stage(self) -> None:
        """Stage two: the LayerNorms stay as stage one left them, and the classifier, trained from now on over the
        current classes, starts as their adapted text features (normalised)."""
        features = F.normalize(self.encode_class_prompts().float(), dim=-1)
        if self.classifier.shape != features.shape:
            self.classifier = nn.Parameter(self._new_classifier(len(features)))
        self.classifier.copy_(features)
        self.resume_second_stage()

    def resume_second_stage(self) -> None:
        """Stage two on the classifier as it is (a run resumed from a checkpoint of stage two): the classifier over
        the current classes is trained from now on, the LayerNorms are frozen."""
        self.config.fitted_classnames = self.classnames
        self._set_class_tokens(self.classnames)
        self._set_trainable()
        self.prompt_changed()

    def image_features(
        self,
        pixel_values: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The adapted image features; no graph in stage two, whose image path is frozen (the official
        `no_grad_backbone`)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.second_stage):
            return super().image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes)

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """The tuned LayerNorms (keyed by their module names) and the classifier."""
        state = {name: p.detach().contiguous() for name, p in self.named_parameters() if LN_TUNING_KEY in name}
        return state | {"classifier": self.classifier.detach().contiguous()}

    def load_prompt(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        super().load_prompt(state_dict, source)
        self._set_trainable()

    def save_extra_files(self, folder: str | os.PathLike) -> None:
        """`peft`'s adapter files beside the prompt: `PeftModel.from_pretrained(<the backbone>, folder)` loads the
        stage-one backbone (the classifier is this model's own)."""
        self.ln_config.save_pretrained(folder)
        weights = {f"base_model.model.{name}": tensor.contiguous()
                   for name, tensor in get_peft_model_state_dict(self.clip).items()}  # fmt: skip
        save_file(weights, os.path.join(folder, PEFT_WEIGHTS_NAME), metadata={"format": "pt"})

    def describe_prompt(self) -> str:
        config = self.config
        fitted = len(config.fitted_classnames) if self.second_stage else 0
        return f"LayerNorms of {config.ln_encoder}, classifier over {fitted} classes"

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        fitted = ", ".join(config.fitted_classnames) if self.second_stage else "none (stage one only)"
        starts = f"{config.ln_vision_start} / {config.ln_text_start}"
        return [
            ("tuned LayerNorms (`ln_encoder`)", config.ln_encoder),
            ("first layers (`ln_vision_start` / `ln_text_start`)", starts),
            ("steps in stage one (`first_stage_fraction`)", f"{config.first_stage_fraction:g}"),
            ("classifier classes", fitted),
            ("class prompt (`template`)", f'"{config.template}"'),
        ]

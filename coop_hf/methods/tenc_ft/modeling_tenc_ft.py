"""TEnc-FT, one of PTNL's models (Wu et al., "Why Is Prompt Tuning for Vision-Language Models Robust to Noisy
Labels?", ICCV 2023): the whole CLIP text encoder fine-tuned on hand-crafted class prompts, the image encoder
frozen. Logits are CLIP's: exp(s) cos(image feature, text feature of `template.format(class)`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...modeling_utils import TextFeatureClassifier
from ..papers import PTNL_PAPER
from .configuration_tenc_ft import TextEncoderFineTuningConfig


class TextEncoderFineTuningModel(TextFeatureClassifier):
    """A trainable copy of the backbone's text encoder (CLIP: `text_model` and `text_projection`; SigLIP: `text_model`
    with its head) over the frozen backbone, whose image encoder and logit scale it uses; the shared backbone itself
    is never changed. The whole text encoder trains and is
    saved (safetensors), so a checkpoint is about as large as CLIP's text half.

    Example:

    ```python
    >>> from coop_hf import TextEncoderFineTuningModel

    >>> model = TextEncoderFineTuningModel.from_clip(clip, ["daisy", "rose"], template="a photo of a {}.")
    >>> logits = model(pixel_values=pixel_values).logits  # untrained: zero-shot CLIP's logits
    ```
    """

    config: TextEncoderFineTuningConfig
    config_class = TextEncoderFineTuningConfig
    method_name = "TEnc-FT"
    paper = PTNL_PAPER

    def __init__(
        self,
        config: TextEncoderFineTuningConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        # The backbone's text path (CLIP: text_model and text_projection; SigLIP: text_model with its head), copied.
        for name, module in self.backbone.text_modules().items():
            setattr(self, name, copy.deepcopy(module).requires_grad_(True))
        self._set_prompts(self.classnames)
        self.post_init()

    def _set_prompts(self, classnames: list[str]) -> None:
        texts = [self.config.template.format(name) for name in classnames]
        tokens = self.backbone.tokenize(self.tokenizer, texts)
        self._token_keys = tuple(tokens)
        for key, value in tokens.items():
            self.register_buffer(key, value.to(self.backbone.device), persistent=False)

    def get_text_features(self) -> torch.Tensor:
        """[classes, projection_dim] unnormalised text features of the class prompts from the fine-tuned encoder."""
        tokens = {key: getattr(self, key) for key in self._token_keys}
        return self.backbone.text_features(tokens, self.fine_tuned_text_modules())

    def fine_tuned_text_modules(self) -> dict[str, torch.nn.Module]:
        return {name: getattr(self, name) for name in self.backbone.text_modules()}

    def text_prompt_tensors(self) -> list[torch.Tensor]:
        return [parameter for module in self.fine_tuned_text_modules().values() for parameter in module.parameters()]

    def class_token_ids(self) -> torch.Tensor:
        return self.input_ids

    def describe_prompt(self) -> str:
        text = self.backbone.text_config
        return f"{len(self.config.classnames)} classes, text width {text.hidden_size}, {text.num_hidden_layers} layers"

    def card_settings(self) -> list[tuple[str, str]]:
        return [
            ("hand-crafted prompt (`template`)", f'"{self.config.template}"'),
            ("trained", "the whole text encoder (transformer and text projection); image encoder frozen"),
        ]

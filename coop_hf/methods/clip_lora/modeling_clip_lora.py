"""CLIP-LoRA: low-rank updates of the attention projections of a contrastive model's towers, injected and saved with
`peft` (Zanella and Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models", CVPRW 2024).

The class prompts are the hand-written template ("a photo of a {class}."); the text features of every class are
recomputed each step through the updated text tower, cut after the end-of-text token on a causal text tower. In
training the LoRA dropout draws a mask for every class and position, as the reference does, so the template's words
before the class name are encoded per class; in eval mode (or with lora_dropout 0) they are encoded once for all
classes (`coop_hf.text_encoding.encode_prompts`). The images go through the updated image tower. The model owns a
copy of the backbone, so the shared one stays untouched.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...modeling_utils import PromptModelOutput, PromptPreTrainedModel
from ...text_encoding import encode_prompts, shared_prefix_length
from .configuration_clip_lora import LORA_PARAMS, CLIPLoRAConfig, layers_at

CLIP_LORA_PAPER = (
    "Zanella and Ben Ayed, Low-Rank Few-Shot Adaptation of Vision-Language Models, CVPR Workshops 2024",
    "https://arxiv.org/abs/2405.18541",
    """@inproceedings{zanella2024low,
  title     = {Low-Rank Few-Shot Adaptation of Vision-Language Models},
  author    = {Zanella, Maxime and Ben Ayed, Ismail},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition Workshops},
  year      = {2024}
}""",
)
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"


class CLIPLoRAModel(PromptPreTrainedModel):
    """A contrastive model with `peft` LoRA updates in the attention projections of its towers.

    Trained and saved: the LoRA matrices A and B of each updated projection (model.safetensors, and `peft`'s own
    adapter_config.json + adapter_model.safetensors, so that `PeftModel.from_pretrained(clip, folder)` loads them).

    Example:

    ```python
    >>> from coop_hf import CLIPLoRAModel

    >>> model = CLIPLoRAModel.from_clip("openai/clip-vit-base-patch16", ["daisy", "rose"])  # r 2, q k v, both towers
    >>> logits = model(pixel_values=pixel_values).logits
    ```
    """

    config: CLIPLoRAConfig
    config_class = CLIPLoRAConfig
    method_name = "CLIP-LoRA"
    paper = CLIP_LORA_PAPER
    image_tower_frozen = False
    transfers_to_new_classes = True

    def __init__(
        self,
        config: CLIPLoRAConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, copy.deepcopy(clip), tokenizer, image_processor)
        self.post_init()  # before the injection: transformers' weight init would redraw the LoRA matrices
        self.lora_config = self.peft_config(config)
        inject_adapter_in_model(self.lora_config, self.clip)
        self.clip.requires_grad_(False)
        for name, parameter in self.clip.named_parameters():
            parameter.requires_grad_("lora_" in name)
        self._keys_to_ignore_on_save = {f"clip.{key}" for key in self.clip.state_dict() if "lora_" not in key}
        self._set_class_tokens(config.classnames)

    def peft_config(self, config: CLIPLoRAConfig) -> LoraConfig:
        """`peft`'s LoRA config of these settings: the updated projections named in full, rsLoRA scaling
        (alpha / sqrt(r), the reference's), A Kaiming-uniform and B zero (the update starts at zero)."""
        towers = {"text": self.backbone.text_layers, "vision": self.backbone.vision_layers}
        chosen = towers if config.lora_encoder == "both" else {config.lora_encoder: towers[config.lora_encoder]}
        if "vision" in chosen and not len(chosen["vision"]):
            raise ValueError(
                "CLIP-LoRA updates the attention of transformer layers, which the image tower of "
                f"{self.backbone.describe()} does not have (a ResNet ends in attention pooling): use "
                "--lora_encoder text."
            )
        layer_names = {id(module): name for name, module in self.clip.named_modules()}
        targets = []
        for layers in chosen.values():
            for index in layers_at(config.lora_position, len(layers)):
                attention = self.backbone.linear_attention(layers[index])  # open_clip's is split in this copy
                layer = layer_names[id(layers[index])]
                targets += [f"{layer}.{attention}.{LORA_PARAMS[param]}" for param in config.lora_params]
        modules = dict(self.clip.named_modules())
        missing = [target for target in targets if not isinstance(modules.get(target), nn.Linear)]
        if missing:
            raise ValueError(
                f"CLIP-LoRA updates linear attention projections ({missing[0]}, ...), which "
                f"{self.backbone.describe()} does not have: choose another --method (CoOp and its successors, "
                "zero-shot, the linear probe, Tip-Adapter, CLIP-Adapter, LP++)."
            )
        if not targets:
            raise ValueError(
                f"lora_position={config.lora_position!r} (--lora_position) selects no layer of this backbone: use a "
                "wider position (all)."
            )
        return LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, use_rslora=True,
            target_modules=targets, base_model_name_or_path=config.base_model_name_or_path,
        )  # fmt: skip

    def _set_class_tokens(self, classnames: list[str]) -> None:
        inputs = self.backbone.tokenize(self.tokenizer, [self.config.template.format(name) for name in classnames])
        input_ids = inputs["input_ids"].to(self.backbone.device)
        eos = self.tokenizer.eos_token_id
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("eot_positions", self.backbone.pool_positions(input_ids, eos), persistent=False)
        mask = inputs.get("attention_mask") if self.backbone.pad_prompts else None  # SigLIP's padding
        self.register_buffer("attention_mask", None if mask is None else mask.to(input_ids.device), persistent=False)
        no_context = input_ids.new_zeros((len(input_ids), 0))  # every position a token of the template
        self.prefix_length = shared_prefix_length(input_ids, no_context, self.eot_positions, class_specific=False)

    def set_classnames(self, classnames: list[str]) -> None:
        """Move to another class list: only the class prompts change, the updates apply to any."""
        self.config.set_classnames(classnames)
        self._set_class_tokens(self.classnames)

    def train(self, mode: bool = True) -> CLIPLoRAModel:
        """Frozen weights in eval mode as always, the LoRA branches' dropout active in training (the reference)."""
        super().train(mode)
        for module in self.clip.modules():
            if isinstance(module, LoraLayer):
                module.lora_dropout.train(mode)
        return self

    def get_text_features(self) -> torch.Tensor:
        """[classes, projection_dim] text features of the class prompts through the updated text tower."""
        embeds = self.backbone.token_embedding(self.input_ids)
        return encode_prompts(
            self.backbone, embeds, self.eot_positions, self.prefix_length, attention_mask=self.attention_mask
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
        """Class logits of images `pixel_values` [batch, 3, H, W]; with `labels`, the cross-entropy."""
        image_embeds = F.normalize(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes), dim=-1
        )
        text_embeds = F.normalize(self.get_text_features(), dim=-1)
        logits = self.backbone.logits(image_embeds, text_embeds)
        return self.classification_output(
            logits, labels, return_dict, image_embeds=image_embeds, text_embeds=text_embeds
        )

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA matrices, keyed by their module names."""
        parameters = self.named_parameters()
        return {name: parameter.detach().contiguous() for name, parameter in parameters if "lora_" in name}

    def save_extra_files(self, folder: str | os.PathLike) -> None:
        """`peft`'s adapter files beside the prompt: `PeftModel.from_pretrained(<the backbone>, folder)` loads them."""
        self.lora_config.save_pretrained(folder)
        # keyed as a PeftModel saves them: the wrapped model under "base_model.model."
        weights = {f"base_model.model.{name}": tensor.contiguous()
                   for name, tensor in get_peft_model_state_dict(self.clip).items()}  # fmt: skip
        save_file(weights, os.path.join(folder, PEFT_WEIGHTS_NAME), metadata={"format": "pt"})

    def describe_prompt(self) -> str:
        config = self.config
        projections = "/".join(config.lora_params)
        return f"rank {config.lora_rank}, {projections} of {config.lora_encoder} ({config.lora_position})"

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        return [
            ("updated projections (`lora_params`)", ", ".join(config.lora_params)),
            ("towers (`lora_encoder`) / layers (`lora_position`)", f"{config.lora_encoder} / {config.lora_position}"),
            ("rank / alpha / dropout", f"{config.lora_rank} / {config.lora_alpha:g} / {config.lora_dropout:g}"),
            ("class prompt (`template`)", f'"{config.template}"'),
        ]

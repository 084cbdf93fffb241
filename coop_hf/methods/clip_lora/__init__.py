"""CLIP-LoRA (Zanella and Ben Ayed, CVPRW 2024): low-rank updates of the attention projections of both towers,
through `peft`."""

from ..registry import register_method
from .configuration_clip_lora import CLIPLoRAConfig
from .modeling_clip_lora import CLIPLoRAModel
from .recipes import RECIPES

ORDER = 80  # where `--method` and the tables list this folder's methods

register_method(
    "clip-lora",
    CLIPLoRAModel,
    trainer="coop_hf.methods.clip_lora.trainer:CLIPLoRATrainer",
    recipes=RECIPES,
)

__all__ = ["CLIPLoRAConfig", "CLIPLoRAModel"]

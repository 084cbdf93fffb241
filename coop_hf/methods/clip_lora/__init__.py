"""CLIP-LoRA (Zanella and Ben Ayed, CVPRW 2024): low-rank updates of the attention projections of both towers,
through `peft`."""

from ..registry import register_method
from .configuration_clip_lora import CLIPLoRAConfig
from .modeling_clip_lora import CLIPLoRAModel

register_method(
    "clip-lora",
    CLIPLoRAModel,
    trainer="coop_hf.methods.clip_lora.trainer:CLIPLoRATrainer",
    # the reference's run_utils.py defaults; its loader keeps the last incomplete batch
    recipe={"learning_rate": 2e-4, "weight_decay": 1e-2, "per_device_train_batch_size": 32, "keep_last_batch": True},
    steps_per_shot=500,
)

__all__ = ["CLIPLoRAConfig", "CLIPLoRAModel"]

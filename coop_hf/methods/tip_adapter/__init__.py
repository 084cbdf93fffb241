"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): zero-shot CLIP plus a cache of the few-shot features."""

from ..registry import register_method
from .configuration_tip_adapter import TipAdapterConfig
from .modeling_tip_adapter import TipAdapterModel

register_method(
    "tip-adapter",
    TipAdapterModel,
    trainer="coop_hf.methods.tip_adapter.trainer:TipAdapterTrainer",
    recipe={"num_train_epochs": 0},  # training-free
    settings={"fine_tune": False},
)
register_method(
    "tip-adapter-f",
    TipAdapterModel,
    trainer="coop_hf.methods.tip_adapter.trainer:TipAdapterFTrainer",
    # the reference's configs and torch's AdamW weight decay
    recipe={"num_train_epochs": 20, "learning_rate": 1e-3, "weight_decay": 1e-2, "per_device_train_batch_size": 256},
    epochs_by_dataset={"eurosat": 100},
    settings={"fine_tune": True},
    label="Tip-Adapter-F",
)

__all__ = ["TipAdapterConfig", "TipAdapterModel"]

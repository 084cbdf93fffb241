"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): zero-shot CLIP plus a cache of the few-shot features."""

from ..registry import register_method
from .configuration_tip_adapter import TipAdapterConfig
from .modeling_tip_adapter import TipAdapterModel
from .recipes import FINE_TUNED_RECIPES, TRAINING_FREE_RECIPES

ORDER = 100  # where `--method` and the tables list this folder's methods

register_method(
    "tip-adapter",
    TipAdapterModel,
    trainer="coop_hf.methods.tip_adapter.trainer:TipAdapterTrainer",
    fitted=True,
    recipes=TRAINING_FREE_RECIPES,
    settings={"fine_tune": False},
)
register_method(
    "tip-adapter-f",
    TipAdapterModel,
    trainer="coop_hf.methods.tip_adapter.trainer:TipAdapterFTrainer",
    fitted=True,
    recipes=FINE_TUNED_RECIPES,
    settings={"fine_tune": True},
    label="Tip-Adapter-F",
)

__all__ = ["TipAdapterConfig", "TipAdapterModel"]

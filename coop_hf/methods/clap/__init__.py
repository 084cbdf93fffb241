"""CLAP and ZS-LP (Silva-Rodríguez et al., CVPR 2024): a linear probe initialised from the zero-shot text
embeddings, CLAP adding a class-adaptive penalty toward them."""

from ..registry import register_method
from .configuration_clap import CLAPConfig
from .modeling_clap import CLAPModel
from .recipes import CLAP_RECIPES, ZS_LP_RECIPES

ORDER = 115  # where `--method` and the tables list this folder's methods: after LP++

TRAINER = "coop_hf.methods.clap.trainer:CLAPTrainer"

register_method(
    "clap",
    CLAPModel,
    trainer=TRAINER,
    fitted=True,
    recipes=CLAP_RECIPES,
    settings={"zero_shot_constraint": True},
    label="CLAP",
)
register_method(
    "zs-lp",
    CLAPModel,
    trainer=TRAINER,
    fitted=True,
    recipes=ZS_LP_RECIPES,
    settings={"zero_shot_constraint": False, "adaptive_multipliers": False},
    label="ZS-LP",
)

__all__ = ["CLAPConfig", "CLAPModel"]

"""CLIP-Adapter's recipe: the official repository ships only clip_adapter.py (ratio 0.2, reduction 4: the config's
defaults), to be run with CoOp's commands and configs, so CoOp's few-shot recipe applies."""

from ..recipes import Recipe, fallback

RECIPES = {
    "few_shot": Recipe(
        source="gaopengcuhk/CLIP-Adapter:README.md ('follow CoOp's command'), clip_adapter.py",
        note="no config shipped: CoOp's few-shot recipe",
    ),
    "base_to_new": fallback("few_shot"),
    "cross_dataset": fallback("few_shot"),
    "domain_generalization": fallback("few_shot"),
}

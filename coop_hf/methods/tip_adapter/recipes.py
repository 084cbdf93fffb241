"""Tip-Adapter's and Tip-Adapter-F's recipes (gaopengcuhk/Tip-Adapter): one config per dataset, few-shot only (its
per-dataset init alpha / beta and search grid: `TipAdapterConfig.dataset_settings`)."""

from ..recipes import Recipe, fallback

SOURCE = "gaopengcuhk/Tip-Adapter:configs/<dataset>.yaml, main.py (main_imagenet.py for ImageNet)"
FALLBACKS = {protocol: fallback("few_shot") for protocol in ("base_to_new", "cross_dataset", "domain_generalization")}

TRAINING_FREE_RECIPES = {
    "few_shot": Recipe(
        training={"num_train_epochs": 0}, source=SOURCE, note="training-free: the cache and the search"
    ),
    **FALLBACKS,
}
FINE_TUNED_RECIPES = {
    "few_shot": Recipe(
        # torch's AdamW weight decay 1e-2 (main.py sets none)
        training={
            "num_train_epochs": 20,
            "learning_rate": 1e-3,
            "weight_decay": 1e-2,
            "per_device_train_batch_size": 256,
        },
        epochs_by_dataset={"eurosat": 100},
        source=SOURCE,
    ),
    **FALLBACKS,
}

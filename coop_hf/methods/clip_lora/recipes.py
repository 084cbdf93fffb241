"""CLIP-LoRA's recipe (MaxZanella/CLIP-LoRA): fixed hyperparameters for every dataset and shot count, few-shot only
(r 2, alpha 1, dropout 0.25 on q/k/v of all layers of both towers: the config's defaults)."""

from ..recipes import Recipe, fallback

RECIPES = {
    "few_shot": Recipe(
        # its loader keeps the last incomplete batch; AdamW weight decay 1e-2
        training={
            "learning_rate": 2e-4,
            "weight_decay": 1e-2,
            "per_device_train_batch_size": 32,
            "keep_last_batch": True,
        },
        steps_per_shot=500,
        source="MaxZanella/CLIP-LoRA:run_utils.py (get_arguments defaults), lora.py (total_iters = n_iters x shots)",
    ),
    "base_to_new": fallback("few_shot"),
    "cross_dataset": fallback("few_shot"),
    "domain_generalization": fallback("few_shot"),
}

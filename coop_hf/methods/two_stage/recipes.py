"""2SFS's recipe (FarinaMatteo/rethinking_fewshot_vlms): fixed hyperparameters for every dataset, shot count and
backbone, in both of the paper's settings (all-to-all few-shot and base-to-new): 300 x shots iterations, 60% of them
tuning the LayerNorms of both towers, then the linear classifier (the config's defaults)."""

from ..recipes import Recipe, fallback

SOURCE = (
    "FarinaMatteo/rethinking_fewshot_vlms:main.py (get_arguments defaults), fs/twostage.py (total_iters = n_iters x "
    "shots), datasets/__init__.py (batch size, no batch dropped)"
)

TRAINING = {"learning_rate": 2e-4, "weight_decay": 1e-2, "per_device_train_batch_size": 32, "keep_last_batch": True}
"""AdamW lr 2e-4, weight decay 1e-2, batch 32; its loader keeps the last incomplete batch (both settings)."""

RECIPES = {
    "few_shot": Recipe(
        training=TRAINING,
        steps_per_shot=300,
        source=SOURCE,
    ),
    "base_to_new": Recipe(
        training=TRAINING,
        steps_per_shot=300,
        source=SOURCE + " (--setting base2new: the same values)",
    ),
    "cross_dataset": fallback("few_shot"),
    "domain_generalization": fallback("few_shot"),
}

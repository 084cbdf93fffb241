"""KgCoOp's recipes per protocol (htyao89/KgCoOp): one config, selected by its base-to-new script and by its
4-shot all-class script; no cross-dataset or domain-generalisation scripts."""

from ..recipes import Recipe, fallback

CONFIG = "htyao89/KgCoOp:KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"
TRAINING = {"per_device_train_batch_size": 128, "num_train_epochs": 100}

RECIPES = {
    "few_shot": Recipe(
        training=TRAINING,
        source=f"{CONFIG}, KgCoOp/scripts/xd_train.sh (W 8.0, 4 shots, all classes)",
    ),
    "base_to_new": Recipe(
        training=TRAINING, source=f"{CONFIG}, KgCoOp/scripts/base2new_train.sh (W 8.0 from scripts/run.sh)"
    ),
    "cross_dataset": fallback("few_shot"),
    "domain_generalization": fallback("few_shot"),
}

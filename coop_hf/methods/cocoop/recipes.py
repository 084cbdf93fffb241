"""CoCoOp's recipes per protocol (KaiyangZhou/CoOp): one config for base-to-new, cross-dataset and domain
generalisation; none for the all-class few-shot protocol."""

from ..recipes import Recipe, fallback

CONFIG = "KaiyangZhou/CoOp:configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
TRAINING = {"per_device_train_batch_size": 1, "num_train_epochs": 10}

RECIPES = {
    "few_shot": fallback("base_to_new"),
    "base_to_new": Recipe(training=TRAINING, source=f"{CONFIG}, scripts/cocoop/base2new_train.sh"),
    "cross_dataset": Recipe(training=TRAINING, source=f"{CONFIG}, scripts/cocoop/xd_train.sh imagenet"),
    "domain_generalization": Recipe(
        training=TRAINING, source=f"{CONFIG}, scripts/cocoop/xd_train.sh imagenet + xd_test.sh on the variants"
    ),
}

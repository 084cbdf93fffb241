"""MaPLe's recipes per protocol (muzairkhattak/multimodal-prompt-learning): one config for base-to-new, another
for cross-dataset and domain generalisation (one ImageNet model); no few-shot config."""

from ..recipes import Recipe, fallback

ROOT = "muzairkhattak/multimodal-prompt-learning:configs/trainers/MaPLe"

RECIPES = {
    "few_shot": fallback("base_to_new"),
    "base_to_new": Recipe(
        training={"learning_rate": 0.0035, "per_device_train_batch_size": 4, "num_train_epochs": 5},
        settings={"prompt_depth": 9, "n_ctx": 2},
        source=f"{ROOT}/vit_b16_c2_ep5_batch4_2ctx.yaml, scripts/maple/base2new_train_maple.sh",
    ),
    "cross_dataset": Recipe(
        training={"learning_rate": 0.0026, "per_device_train_batch_size": 4, "num_train_epochs": 2},
        settings={"prompt_depth": 3, "n_ctx": 2},
        source=f"{ROOT}/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml, scripts/maple/xd_train_maple.sh imagenet",
    ),
    "domain_generalization": Recipe(
        training={"learning_rate": 0.0026, "per_device_train_batch_size": 4, "num_train_epochs": 2},
        settings={"prompt_depth": 3, "n_ctx": 2},
        source=f"{ROOT}/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml, scripts/maple/xd_train_maple.sh imagenet + "
        "xd_test_maple.sh on the variants (docs/RUN.md)",
    ),
}

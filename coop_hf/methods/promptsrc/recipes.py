"""PromptSRC's recipes per protocol (muzairkhattak/PromptSRC; loss weights 25 / 10 and 4+4 context in every
config)."""

from ..recipes import Recipe

ROOT = "muzairkhattak/PromptSRC:configs/trainers/PromptSRC"
TRAINING = {"learning_rate": 0.0025, "per_device_train_batch_size": 4}
DEEP = {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9}
SHALLOW = {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 3, "prompt_depth_vision": 3}
LOSS = {"text_loss_weight": 25.0, "image_loss_weight": 10.0}
GPA_45_5 = {"gpa_mean": 45.0, "gpa_std": 5.0}  # the few-shot yaml's commented alternative for these datasets

RECIPES = {
    "few_shot": Recipe(
        training={**TRAINING, "num_train_epochs": 50},
        settings={**DEEP, **LOSS, "gpa_mean": 30.0, "gpa_std": 30.0},
        settings_by_dataset=dict.fromkeys(
            ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"), GPA_45_5
        ),
        source=f"{ROOT}/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml, scripts/promptsrc/few_shot.sh",
    ),
    "base_to_new": Recipe(
        training={**TRAINING, "num_train_epochs": 20},
        settings={**DEEP, **LOSS, "gpa_mean": 15.0, "gpa_std": 1.0},
        source=f"{ROOT}/vit_b16_c2_ep20_batch4_4+4ctx.yaml, scripts/promptsrc/base2new_train.sh",
    ),
    "cross_dataset": Recipe(
        training={**TRAINING, "num_train_epochs": 20},
        settings={**SHALLOW, **LOSS, "gpa_mean": 6.0, "gpa_std": 10.0},
        source=f"{ROOT}/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml, scripts/promptsrc/reproduce_xd.sh",
    ),
    "domain_generalization": Recipe(
        training={**TRAINING, "num_train_epochs": 20},
        settings={**SHALLOW, **LOSS, "gpa_mean": 6.0, "gpa_std": 10.0},
        source=f"{ROOT}/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml (docs/TRAIN.md), "
        "scripts/promptsrc/xd_test.sh on the variants",
    ),
}

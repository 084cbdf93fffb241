"""ProGrad's recipes per protocol (BeierZhu/Prompt-align, RN50 configs; lambda 1.0 and T 1.0 are the config's
defaults)."""

from ..recipes import Recipe, fallback

ROOT = "BeierZhu/Prompt-align:ProGrad.public"

RECIPES = {
    "few_shot": Recipe(
        source=f"{ROOT}/configs/trainers/ProGrad/rn50_ep50.yaml, rn50_ep100.yaml, rn50.yaml (picked by shots in "
        "README.md), scripts/prograd.sh",
        note="README: lambda 0.8 for 8/16 shots on Flowers102, DTD, EuroSAT, not in prograd.sh: give "
        "--prograd_lambda 0.8",
    ),
    "base_to_new": Recipe(
        training={"num_train_epochs": 100},
        epochs_by_dataset={"imagenet": 50},
        source=f"{ROOT}/configs/trainers/ProGrad/rn50_ep100.yaml (rn50_ep50.yaml for ImageNet, README.md), "
        "scripts/base2new_train_prograd.sh",
        note="the script trains 4 shots",
    ),
    "cross_dataset": fallback("domain_generalization"),
    "domain_generalization": Recipe(
        training={"num_train_epochs": 50},
        source=f"{ROOT}/configs/trainers/ProGrad/rn50_ep50.yaml (scripts/prograd.sh imagenet), scripts/eval.sh "
        "(--load-epoch 50)",
        note="the script trains 4 shots",
    ),
}

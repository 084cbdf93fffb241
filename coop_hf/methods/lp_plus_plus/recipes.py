"""LP++'s recipe (FereshteShakeri/FewShot-CLIP-Strong-Baseline): base.yaml's 300 full-batch epochs (step sizes
computed from the data), for the few-shot protocol and for domain generalisation from ImageNet."""

from ..recipes import Recipe, fallback

ROOT = "FereshteShakeri/FewShot-CLIP-Strong-Baseline"

RECIPES = {
    "few_shot": Recipe(training={"num_train_epochs": 300}, source=f"{ROOT}:configs/base.yaml (train_epoch), main.py"),
    "base_to_new": fallback("few_shot"),
    "cross_dataset": fallback("few_shot"),
    "domain_generalization": Recipe(
        training={"num_train_epochs": 300},
        source=f"{ROOT}:configs/base.yaml (train_epoch), main_imagenet.py with configs/imagenetv2.yaml etc.",
    ),
}

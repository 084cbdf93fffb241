"""CLAP's and ZS-LP's recipe (jusiro/CLAP): one trainer config for every dataset and shot count, SGD lr 0.1, batch
256, 300 epochs (one warm-up epoch at lr 1e-5, then cosine), no weight decay; the class prompts per dataset are
`CLAPConfig.dataset_settings`'s. Domain generalisation evaluates the ImageNet-trained model (scripts/eval.sh)."""

from ..recipes import Recipe, fallback

ROOT = "jusiro/CLAP"
TRAINING = {
    "num_train_epochs": 300,
    "learning_rate": 0.1,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 256,
}  # momentum 0.9, warm-up 1 epoch at 1e-5: Dassl's defaults and the config's, as CoOp's
CONFIG = f"{ROOT}:configs/trainers/SGD_lr1e-1_B256_ep300.yaml"


def clap_recipes(experiments: str) -> dict[str, Recipe]:
    """The recipes of one of the two methods, whose runs `experiments` lists."""
    return {
        "few_shot": Recipe(training=TRAINING, source=f"{CONFIG}, scripts/adapt.sh ({experiments})"),
        "base_to_new": fallback("few_shot"),
        "cross_dataset": fallback("few_shot"),
        "domain_generalization": Recipe(
            training=TRAINING, source=f"{CONFIG}, scripts/eval.sh (the ImageNet model at epoch 300)"
        ),
    }


CLAP_RECIPES = clap_recipes("experiments/experiment_CLAP.txt: ZS l2")
ZS_LP_RECIPES = clap_recipes("experiments/experiment_ZSLP.txt: ZS none")

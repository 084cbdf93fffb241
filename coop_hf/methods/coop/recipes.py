"""CoOp's recipes per protocol (KaiyangZhou/CoOp; SGD, lr 0.002, batch 32, cosine after 1 warm-up epoch at 1e-5 and
Dassl's weight decay 5e-4: `CoOpTrainingArguments`' defaults)."""

from ..recipes import Recipe

RECIPES = {
    "few_shot": Recipe(
        source="KaiyangZhou/CoOp:configs/trainers/CoOp/rn50_ep50.yaml, rn50_ep100.yaml, rn50.yaml (picked by shots in "
        "COOP.md; *_ep50.yaml for ImageNet), scripts/coop/main.sh",
        note="under label noise, PTNL's 50 epochs: CEWu/PTNL:configs/trainers/UPLTrainer/rn50_ep50.yaml",
    ),
    "base_to_new": Recipe(
        training={"num_train_epochs": 200},
        epochs_by_dataset={"imagenet": 50},
        source="KaiyangZhou/CoOp:configs/trainers/CoOp/vit_b16_ctxv1.yaml (vit_b16_ep50_ctxv1.yaml for ImageNet), "
        "scripts/cocoop/base2new_train.sh (commented CFG lines for CoOp)",
        note='context "a photo of a": base_to_new.py\'s default',
    ),
    "cross_dataset": Recipe(
        training={"num_train_epochs": 50},
        source="KaiyangZhou/CoOp:configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml, scripts/cocoop/xd_train.sh (commented "
        "CFG line for CoOp)",
    ),
    "domain_generalization": Recipe(
        training={"num_train_epochs": 50},
        source="KaiyangZhou/CoOp:configs/trainers/CoOp/rn50_ep50.yaml (scripts/coop/main.sh imagenet), "
        "scripts/coop/eval.sh",
    ),
}

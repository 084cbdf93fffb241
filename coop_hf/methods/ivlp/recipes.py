"""IVLP's recipes per protocol: the PromptSRC repository's 4+4-context, depth-9 config (the PromptSRC paper's IVLP),
which ships only a base-to-new script for it."""

from ..recipes import Recipe, fallback

RECIPES = {
    "few_shot": fallback("base_to_new"),
    "base_to_new": Recipe(
        training={"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
        settings={"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9},
        source="muzairkhattak/PromptSRC:configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml, "
        "scripts/independent-vlp/base2new_train_ivlp.sh",
        note="the MaPLe repository's IVLP is another model: 2+2 context, depth 12, lr 0.0035, 5 epochs",
    ),
    "cross_dataset": fallback(
        "base_to_new", "multimodal-prompt-learning's xd_train_ivlp.sh likewise reuses its base-to-new config"
    ),
    "domain_generalization": fallback("base_to_new"),
}

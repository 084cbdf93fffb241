"""Every method's recipe per protocol and every model default, pinned to values transcribed by hand from the official
repositories' config files (KaiyangZhou/CoOp, htyao89/KgCoOp, BeierZhu/Prompt-align, muzairkhattak/
multimodal-prompt-learning, muzairkhattak/PromptSRC, MaxZanella/CLIP-LoRA, gaopengcuhk/Tip-Adapter,
gaopengcuhk/CLIP-Adapter, FereshteShakeri/FewShot-CLIP-Strong-Baseline), never read back from the code under test;
and each study applying its protocol's recipe by itself, explicit flags winning."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from coop_hf import (
    CLIPAdapterConfig,
    CLIPLoRAConfig,
    CoCoOpConfig,
    CoOpConfig,
    IVLPConfig,
    KgCoOpConfig,
    MaPLeConfig,
    ProGradConfig,
    PromptSRCConfig,
    TipAdapterConfig,
)
from coop_hf.methods import PROTOCOLS
from coop_hf.runners import PromptArguments, base_to_new, transfer
from coop_hf.runners.help import method_help_page, recipe_table
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments, reference_epochs

CLASSNAMES = ["cat", "dog"]
MAPLE_B2N = {"learning_rate": 0.0035, "per_device_train_batch_size": 4, "num_train_epochs": 5}
MAPLE_XD = {"learning_rate": 0.0026, "per_device_train_batch_size": 4, "num_train_epochs": 2}
PROMPTSRC_LOSS = {"text_loss_weight": 25, "image_loss_weight": 10, "n_ctx": 4, "n_ctx_vision": 4}
GPA_45_5 = {"gpa_mean": 45, "gpa_std": 5}  # the few-shot yaml's commented block for these five datasets

# method -> protocol -> what the official files give: "training" (CoOpTrainingArguments values), "settings" (prompt
# settings), "epochs_by_dataset", "settings_by_dataset", "steps_per_shot", "file" (the config the row must cite);
# or "uses": the protocol whose recipe applies where the repository ships none.
EXPECTED = {
    "coop": {
        "few_shot": {"file": "KaiyangZhou/CoOp:configs/trainers/CoOp/rn50_ep50.yaml"},  # + rn50_ep100, rn50 by shots
        "base_to_new": {
            "training": {"num_train_epochs": 200},  # vit_b16_ctxv1.yaml MAX_EPOCH
            "epochs_by_dataset": {"imagenet": 50},  # vit_b16_ep50_ctxv1.yaml for ImageNet
            "file": "configs/trainers/CoOp/vit_b16_ctxv1.yaml",
        },
        "cross_dataset": {"training": {"num_train_epochs": 50}, "file": "CoOp/vit_b16_ep50_ctxv1.yaml"},
        "domain_generalization": {"training": {"num_train_epochs": 50}, "file": "scripts/coop/eval.sh"},
    },
    "cocoop": {
        "few_shot": {"uses": "base_to_new"},
        **dict.fromkeys(
            ("base_to_new", "cross_dataset", "domain_generalization"),
            {
                "training": {"per_device_train_batch_size": 1, "num_train_epochs": 10},
                "file": "KaiyangZhou/CoOp:configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
            },
        ),
    },
    "kgcoop": {
        **dict.fromkeys(
            ("few_shot", "base_to_new"),
            {
                "training": {"per_device_train_batch_size": 128, "num_train_epochs": 100},
                "file": "htyao89/KgCoOp:KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
            },
        ),
        "cross_dataset": {"uses": "few_shot"},
        "domain_generalization": {"uses": "few_shot"},
    },
    "prograd": {
        "few_shot": {"file": "BeierZhu/Prompt-align:ProGrad.public/configs/trainers/ProGrad/rn50_ep50.yaml"},
        "base_to_new": {
            "training": {"num_train_epochs": 100},
            "epochs_by_dataset": {"imagenet": 50},
            "file": "ProGrad/rn50_ep100.yaml",
        },
        "cross_dataset": {"uses": "domain_generalization"},
        "domain_generalization": {"training": {"num_train_epochs": 50}, "file": "scripts/eval.sh"},
    },
    "maple": {
        "few_shot": {"uses": "base_to_new"},
        "base_to_new": {
            "training": MAPLE_B2N,
            "settings": {"prompt_depth": 9, "n_ctx": 2},
            "file": "muzairkhattak/multimodal-prompt-learning:configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
        },
        **dict.fromkeys(
            ("cross_dataset", "domain_generalization"),
            {
                "training": MAPLE_XD,
                "settings": {"prompt_depth": 3, "n_ctx": 2},
                "file": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
            },
        ),
    },
    "ivlp": {
        "few_shot": {"uses": "base_to_new"},
        "base_to_new": {
            "training": {"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
            "settings": {"n_ctx": 4, "n_ctx_vision": 4, "prompt_depth_text": 9, "prompt_depth_vision": 9},
            "file": "muzairkhattak/PromptSRC:configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
        },
        "cross_dataset": {"uses": "base_to_new"},
        "domain_generalization": {"uses": "base_to_new"},
    },
    "promptsrc": {
        "few_shot": {
            "training": {"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 50},
            "settings": {
                **PROMPTSRC_LOSS,
                "prompt_depth_text": 9,
                "prompt_depth_vision": 9,
                "gpa_mean": 30,
                "gpa_std": 30,
            },  # fmt: skip
            "settings_by_dataset": {
                "stanford_cars": GPA_45_5,
                "oxford_flowers": GPA_45_5,
                "fgvc_aircraft": GPA_45_5,
                "dtd": GPA_45_5,
                "eurosat": GPA_45_5,
            },  # fmt: skip
            "file": "muzairkhattak/PromptSRC:configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml",
        },
        "base_to_new": {
            "training": {"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
            "settings": {
                **PROMPTSRC_LOSS,
                "prompt_depth_text": 9,
                "prompt_depth_vision": 9,
                "gpa_mean": 15,
                "gpa_std": 1,
            },  # fmt: skip
            "file": "muzairkhattak/PromptSRC:configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
        },
        **dict.fromkeys(
            ("cross_dataset", "domain_generalization"),
            {
                "training": {"learning_rate": 0.0025, "per_device_train_batch_size": 4, "num_train_epochs": 20},
                "settings": {
                    **PROMPTSRC_LOSS,
                    "prompt_depth_text": 3,
                    "prompt_depth_vision": 3,
                    "gpa_mean": 6,
                    "gpa_std": 10,
                },  # fmt: skip
                "file": "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml",
            },
        ),
    },
    "clip-lora": {
        "few_shot": {
            # run_utils.py: lr 2e-4, batch_size 32, n_iters 500 (x shots); lora.py: AdamW weight_decay 1e-2
            "training": {
                "learning_rate": 2e-4,
                "weight_decay": 1e-2,
                "per_device_train_batch_size": 32,
                "keep_last_batch": True,
            },  # fmt: skip
            "steps_per_shot": 500,
            "file": "MaxZanella/CLIP-LoRA:run_utils.py",
        },
        **dict.fromkeys(("base_to_new", "cross_dataset", "domain_generalization"), {"uses": "few_shot"}),
    },
    "clip-adapter": {
        "few_shot": {"file": "gaopengcuhk/CLIP-Adapter:README.md"},  # "follow CoOp's command": CoOp's recipe
        **dict.fromkeys(("base_to_new", "cross_dataset", "domain_generalization"), {"uses": "few_shot"}),
    },
    "tip-adapter": {
        "few_shot": {"training": {"num_train_epochs": 0}, "file": "gaopengcuhk/Tip-Adapter:configs/<dataset>.yaml"},
        **dict.fromkeys(("base_to_new", "cross_dataset", "domain_generalization"), {"uses": "few_shot"}),
    },
    "tip-adapter-f": {
        "few_shot": {
            # configs/*.yaml: lr 0.001, train_epoch 20 (eurosat.yaml 100); batch 256 in main.py; torch AdamW decay
            "training": {
                "num_train_epochs": 20,
                "learning_rate": 1e-3,
                "weight_decay": 1e-2,
                "per_device_train_batch_size": 256,
            },  # fmt: skip
            "epochs_by_dataset": {"eurosat": 100},
            "file": "gaopengcuhk/Tip-Adapter:configs/<dataset>.yaml",
        },
        **dict.fromkeys(("base_to_new", "cross_dataset", "domain_generalization"), {"uses": "few_shot"}),
    },
    "lp++": {
        "few_shot": {
            "training": {"num_train_epochs": 300},
            "file": "FereshteShakeri/FewShot-CLIP-Strong-Baseline:configs/base.yaml",
        },
        "base_to_new": {"uses": "few_shot"},
        "cross_dataset": {"uses": "few_shot"},
        "domain_generalization": {"training": {"num_train_epochs": 300}, "file": "main_imagenet.py"},
    },
}

# (search_scale [beta, alpha], init_beta, init_alpha) of gaopengcuhk/Tip-Adapter:configs/<dataset>.yaml
TIP_ADAPTER_CONFIGS = {
    "caltech101": ([12, 5], 1, 3),
    "dtd": ([13, 13], 1, 2),
    "eurosat": ([12, 10], 1, 2),
    "fgvc_aircraft": ([30, 30], 1, 5),  # configs/fgvc.yaml
    "food101": ([10, 10], 1, 1.17),
    "imagenet": ([7, 3], 1, 1.17),
    "oxford_flowers": ([50, 50], 1, 10),
    "oxford_pets": ([7, 3], 1, 1.17),
    "stanford_cars": ([20, 10], 1, 3),
    "sun397": ([12, 10], 1, 1.17),
    "ucf101": ([7, 3], 1, 3),
}


def cases():
    return [(name, protocol) for name, table in EXPECTED.items() for protocol in PROTOCOLS if protocol in table]


def test_every_method_and_protocol_is_transcribed():
    audited = {"coop", "cocoop", "kgcoop", "prograd", "maple", "ivlp", "promptsrc", "clip-lora", "clip-adapter"}
    audited |= {"tip-adapter", "tip-adapter-f", "lp++"}
    assert set(EXPECTED) == audited and audited <= set(PROMPT_METHODS)
    assert all(set(table) == set(PROTOCOLS) for table in EXPECTED.values())


@pytest.mark.parametrize(("name", "protocol"), cases())
def test_recipe_matches_the_official_config(name, protocol):
    expected, method = EXPECTED[name][protocol], PROMPT_METHODS[name]
    registered = method.recipes[protocol]
    if "uses" in expected:
        assert registered.uses == expected["uses"], "the repository ships no config: the row must say so"
        assert method.recipe(protocol) is method.recipe(expected["uses"])
        return
    assert registered.uses is None
    assert registered.training == expected.get("training", {})
    assert registered.settings == expected.get("settings", {})
    assert registered.epochs_by_dataset == expected.get("epochs_by_dataset", {})
    assert registered.settings_by_dataset == expected.get("settings_by_dataset", {})
    assert registered.steps_per_shot == expected.get("steps_per_shot")
    assert expected["file"] in registered.source


def test_shared_defaults_are_dassl_and_coop_values():
    """Dassl's defaults (weight decay 5e-4, momentum 0.9) and CoOp's yaml (lr 0.002, batch 32, 1 constant warm-up
    epoch at 1e-5) hold wherever a recipe sets nothing; CoOp's epochs by shots per COOP.md."""
    args = CoOpTrainingArguments("unused")
    assert (args.learning_rate, args.per_device_train_batch_size, args.weight_decay, args.momentum) == (
        0.002, 32, 5e-4, 0.9
    )  # fmt: skip
    assert (args.warmup_epochs, args.warmup_lr) == (1, 1e-5)
    assert [reference_epochs(shots) for shots in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert reference_epochs(16, "imagenet") == 50


def test_model_defaults_are_the_official_values():
    adapter = CLIPAdapterConfig(classnames=CLASSNAMES)  # clip_adapter.py: Adapter(1024, 4), ratio = 0.2
    assert (adapter.residual_ratio, adapter.reduction) == (0.2, 4)
    lora = CLIPLoRAConfig(classnames=CLASSNAMES)  # run_utils.py defaults
    assert (lora.lora_rank, lora.lora_alpha, lora.lora_dropout) == (2, 1, 0.25)
    assert (lora.lora_params, lora.lora_encoder, lora.lora_position) == (["q", "k", "v"], "both", "all")
    kgcoop = KgCoOpConfig(classnames=CLASSNAMES)  # scripts/run.sh W 8.0; kgcoop.py "a photo of a"
    assert (kgcoop.kg_weight, kgcoop.n_ctx, kgcoop.ctx_init) == (8.0, 4, "a photo of a")
    prograd = ProGradConfig(classnames=CLASSNAMES)  # prograd.sh LAMBDA=1.0, LOSS.T 1.0, NCTX 16
    assert (prograd.prograd_lambda, prograd.prograd_temperature, prograd.n_ctx) == (1.0, 1.0, 16)
    promptsrc = PromptSRCConfig(classnames=CLASSNAMES)  # vit_b16_c2_ep20_batch4_4+4ctx.yaml
    assert (promptsrc.text_loss_weight, promptsrc.image_loss_weight, promptsrc.gpa_mean, promptsrc.gpa_std) == (
        25, 10, 15, 1
    )  # fmt: skip
    assert (promptsrc.n_ctx, promptsrc.n_ctx_vision, promptsrc.prompt_depth_text, promptsrc.prompt_depth_vision) == (
        4, 4, 9, 9
    )  # fmt: skip
    maple = MaPLeConfig(classnames=CLASSNAMES)  # vit_b16_c2_ep5_batch4_2ctx.yaml
    assert (maple.prompt_depth, maple.n_ctx, maple.ctx_init) == (9, 2, "a photo of a")
    ivlp = IVLPConfig(classnames=CLASSNAMES)  # PromptSRC repo's IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml
    assert (ivlp.n_ctx, ivlp.n_ctx_vision, ivlp.prompt_depth_text, ivlp.prompt_depth_vision) == (4, 4, 9, 9)
    assert ivlp.ctx_init == "a photo of a"
    cocoop = CoCoOpConfig(classnames=CLASSNAMES)  # vit_b16_c4_ep10_batch1_ctxv1.yaml
    assert (cocoop.n_ctx, cocoop.ctx_init) == (4, "a photo of a")
    coop = CoOpConfig(classnames=CLASSNAMES)  # rn50*.yaml: random init, NCTX 16, end, CSC False
    assert (coop.n_ctx, coop.ctx_init, coop.class_token_position, coop.class_specific_context) == (
        16, None, "end", False
    )  # fmt: skip


@pytest.mark.parametrize("dataset", sorted(TIP_ADAPTER_CONFIGS))
def test_tip_adapter_per_dataset_configs(dataset):
    scale, beta, alpha = TIP_ADAPTER_CONFIGS[dataset]
    settings = TipAdapterConfig.dataset_settings(dataset)
    assert (settings["search_scale"], settings["init_beta"], settings["init_alpha"]) == (scale, beta, alpha)
    config = TipAdapterConfig(classnames=CLASSNAMES, **{k: v for k, v in settings.items() if k != "templates"})
    assert config.search_steps == [200, 20]


# -- each study applies its protocol's recipe ------------------------------------------------------------------------


def resolved(name, protocol, dataset="imagenet", args=None, flags=None):
    """(training arguments, epochs, prompt settings) a run of `name` under `protocol` gets."""
    method, experiment = PROMPT_METHODS[name], SimpleNamespace(dataset=dataset)
    args = method.training_arguments(args or CoOpTrainingArguments("unused"), protocol)
    epochs = method.epochs(experiment, 16, args, protocol=protocol)
    return args, epochs, method.method_settings(experiment, flags or {}, protocol)


def test_maple_transfer_uses_its_cross_dataset_config():
    for protocol in ("cross_dataset", "domain_generalization"):
        args, epochs, settings = resolved("maple", protocol)
        assert (args.learning_rate, args.per_device_train_batch_size, epochs) == (0.0026, 4, 2)
        assert settings["prompt_depth"] == 3
    args, epochs, settings = resolved("maple", "base_to_new", "caltech101")
    assert (args.learning_rate, epochs, settings["prompt_depth"]) == (0.0035, 5, 9)


def test_promptsrc_few_shot_uses_its_few_shot_config():
    args, epochs, settings = resolved("promptsrc", "few_shot", "caltech101")
    assert (args.learning_rate, epochs, settings["gpa_mean"], settings["gpa_std"]) == (0.0025, 50, 30, 30)
    _, _, settings = resolved("promptsrc", "few_shot", "dtd")
    assert (settings["gpa_mean"], settings["gpa_std"]) == (45, 5)
    _, epochs, settings = resolved("promptsrc", "cross_dataset")
    assert (epochs, settings["prompt_depth_text"], settings["gpa_mean"], settings["gpa_std"]) == (20, 3, 6, 10)


def test_explicit_flags_win_over_the_recipe():
    given = CoOpTrainingArguments("unused", learning_rate=0.01, num_train_epochs=3)
    args, epochs, settings = resolved("maple", "domain_generalization", args=given, flags={"prompt_depth": 1})
    assert (args.learning_rate, args.per_device_train_batch_size, epochs, settings["prompt_depth"]) == (0.01, 4, 3, 1)
    _, _, settings = resolved("promptsrc", "few_shot", "dtd", flags={"gpa_mean": 7.0})
    assert (settings["gpa_mean"], settings["gpa_std"]) == (7.0, 5)


def test_base_to_new_epochs_by_dataset():
    assert resolved("coop", "base_to_new", "imagenet")[1] == 50 and resolved("coop", "base_to_new", "dtd")[1] == 200
    assert resolved("prograd", "base_to_new", "imagenet")[1] == 50
    assert resolved("tip-adapter-f", "few_shot", "eurosat")[1] == 100


class Planned(Exception):
    """Raised by a stubbed runner with the run settings a study passed it."""


def test_studies_name_their_protocol(monkeypatch, tmp_path):
    def capture(*arguments, **_):
        raise Planned(next(value for value in arguments if hasattr(value, "protocol")))

    experiment = SimpleNamespace(dataset="caltech101")
    monkeypatch.setattr(transfer, "run_transfer", capture)
    monkeypatch.setattr(transfer, "load_experiments", lambda arguments, names, args: [experiment] * len(names))
    args = CoOpTrainingArguments(str(tmp_path / "out"))
    for targets, protocol in ((list(transfer.DG_TARGETS), "domain_generalization"), (["dtd"], "cross_dataset")):
        arguments = transfer.TransferArguments(dataset="imagenet", targets=targets, method="maple")
        with pytest.raises(Planned) as planned:
            transfer.transfer_study(arguments, PromptArguments(), args)
        assert planned.value.args[0].protocol == protocol
    monkeypatch.setattr(base_to_new, "run_base_to_new", capture)
    monkeypatch.setattr(base_to_new, "check_dataset_folders", lambda datasets: None)
    monkeypatch.setattr(base_to_new, "load_experiments", lambda arguments, names, args: [experiment])
    with pytest.raises(Planned) as planned:
        base_to_new.base_to_new_study(base_to_new.BaseToNewArguments(method="maple"), PromptArguments(), args)
    assert planned.value.args[0].protocol == "base_to_new"


def test_help_and_docs_show_the_table_with_sources():
    page = method_help_page("maple")
    assert "cross-dataset (transfer.py):" in page and "--learning_rate 0.0026" in page
    assert "vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml" in page
    assert "no official config; uses base-to-new's" in page
    page = (Path(__file__).parents[1] / "docs" / "methods" / "index.md").read_text(encoding="utf-8")
    assert recipe_table() in page, "docs/methods/index.md's recipe table is stale: paste recipe_table()'s output"

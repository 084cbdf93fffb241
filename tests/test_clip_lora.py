"""CLIP-LoRA against a reference computation written from the official code (MaxZanella/CLIP-LoRA: lora.py's
run_lora, loralib's LinearLoRA and PlainMultiheadAttentionLoRA): each updated projection is W + alpha / sqrt(r) *
B @ A, the class prompts are the template tokenized to the full 77 tokens; on the same random weights."""

import copy
import math

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch.func import functional_call
from transformers import AutoModel

from coop_hf import CLIPLoRAConfig, CLIPLoRAModel
from coop_hf.methods.clip_lora.configuration_clip_lora import layers_at
from coop_hf.methods.clip_lora.trainer import CLIPLoRATrainer
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, random_clip, tiny_clip_config
from tests.test_maple import CLASSNAMES, IMAGE_SIZE, assert_step_matches
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, stages


def lora_model(family, clip, tokenizer, **settings):
    """A CLIP-LoRA model whose B matrices are random (at initialisation they are zero, and so every A gradient)."""
    torch.manual_seed(0)
    model = CLIPLoRAModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, **settings)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    return model


def official_logits(model, clip, tokenizer, pixel_values):
    """run_lora's training forward on the plain backbone: every updated projection W + scaling * B @ A
    (LinearLoRA.merge_BA, scaling = lora_alpha / sqrt(r)) on copies of A and B, the template prompts padded to the
    full context (clip.tokenize), logit_scale.exp() x the cosines."""
    config = model.config
    scaling = config.lora_alpha / math.sqrt(config.lora_rank)
    parameters = dict(clip.named_parameters())
    copies = {}
    for name, module in model.clip.named_modules():
        if isinstance(module, LoraLayer):
            a = module.lora_A["default"].weight.detach().clone().requires_grad_(True)
            b = module.lora_B["default"].weight.detach().clone().requires_grad_(True)
            parameters[f"{name}.weight"] = parameters[f"{name}.weight"] + scaling * (b @ a)
            copies |= {f"clip.{name}.lora_A.default.weight": a, f"clip.{name}.lora_B.default.weight": b}
    texts = [config.template.format(name) for name in CLASSNAMES]
    length = clip.config.text_config.max_position_embeddings
    ids = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]
    output = functional_call(clip, parameters, (), {"input_ids": ids, "pixel_values": pixel_values})
    return output.logits_per_image, copies


@pytest.mark.parametrize(
    "settings",
    [{}, {"lora_params": ["q", "v", "o"], "lora_rank": 3, "lora_alpha": 2.0}, {"lora_encoder": "text"},
     {"lora_encoder": "vision", "lora_position": "half-up"}],
)  # fmt: skip
def test_logits_and_every_lora_gradient_match_the_official_computation(clip_like_backbone, settings):
    family, clip, tokenizer = clip_like_backbone
    model = lora_model(family, clip, tokenizer, lora_dropout=0.0, **settings)
    model.train()
    official = lambda lora, pixel_values: official_logits(lora, clip, tokenizer, pixel_values)  # noqa: E731
    _, _, copies = assert_step_matches(model, family, official)
    assert copies
    assert not any("lora_" in name for name, _ in clip.named_parameters())  # the shared backbone is untouched


def test_layers_positions_and_initialisation(clip_tokenizer):
    assert layers_at("all", 12) == list(range(12)) and layers_at("up", 12) == [8, 9, 10, 11]
    assert layers_at("half-bottom", 12) == [0, 1, 2, 3, 4, 5] and layers_at("top3", 12) == [9, 10, 11]
    model = CLIPLoRAModel.from_clip(random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer)
    updated = {name for name, module in model.clip.named_modules() if isinstance(module, LoraLayer)}
    assert len(updated) == 2 * 2 * 3  # two towers x two layers x q, k, v
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if "lora_B" in n)  # starts at CLIP
    assert model.prefix_length == 5  # [SOS] a photo of a: encoded once for all classes
    with pytest.raises(ValueError, match=r"lora_params \(--lora_params\) takes distinct projections among q, k, v, o"):
        CLIPLoRAConfig(classnames=CLASSNAMES, lora_params=["q", "x"])


def test_dropout_on_the_lora_branch_in_training_only(clip_tokenizer):
    model = lora_model("clip", random_clip(tiny_clip_config()), clip_tokenizer)
    pixel_values = torch.randn(2, 3, 224, 224)
    model.train()
    assert not model.clip.training and not torch.equal(model(pixel_values).logits, model(pixel_values).logits)
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)


def test_saved_as_lora_tensors_that_peft_and_coop_hf_load(clip_like_backbone, tmp_path):
    family, clip, tokenizer = clip_like_backbone
    model = lora_model(family, clip, tokenizer).eval()
    model.save_pretrained(tmp_path)
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
        loaded = AutoModel.from_pretrained(tmp_path, clip_model=clip, tokenizer=tokenizer)
        assert type(loaded) is CLIPLoRAModel
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, expected)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(clip), tmp_path)  # peft on the plain backbone
        texts = [model.config.template.format(name) for name in CLASSNAMES]
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
        peft_logits = peft_model(**inputs, pixel_values=pixel_values).logits_per_image
    assert_close_fp32(peft_logits, expected, depth=stages(2))


def test_recipe_and_the_reference_iterations(tiny_clip_dir):
    from coop_hf.runners import Experiment
    from coop_hf.runners.settings import RunSettings

    method = PROMPT_METHODS["clip-lora"]
    assert method.trainer_class is CLIPLoRATrainer
    experiment = Experiment.load(str(tiny_clip_dir), "oxford_flowers", str(DATA))
    planned = method.plan(experiment, RunSettings(shots=4, seeds=[1]), CoOpTrainingArguments("unused"), {})
    args = planned.args
    assert (args.learning_rate, args.weight_decay, args.per_device_train_batch_size) == (2e-4, 1e-2, 32)
    assert args.max_steps == 500 * 4 and args.keep_last_batch  # 500 x shots iterations, no batch dropped


@pytest.mark.slow
def test_trained_by_the_script_with_adamw_and_cosine_steps(tiny_clip_dir, tmp_path):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", "clip-lora", "--max_steps", "4")
    arguments.remove("--n_ctx"), arguments.remove("4")  # a CoOp setting
    results = run_in_process(arguments)
    assert results["method"] == "clip-lora" and results["lora_rank"] == 2
    assert {"adapter_config.json", "adapter_model.safetensors", "model.safetensors"} <= {
        path.name for path in (tmp_path / "seed1").iterdir()
    }
    assert (tmp_path / "seed1" / "model.safetensors").stat().st_size < 200_000
    card = (tmp_path / "seed1" / "README.md").read_text()
    assert "q, k, v" in card and "both / all" in card


def test_adamw_and_the_per_step_cosine_to_1e_6(tiny_clip_dir, tmp_path):
    import datasets
    from transformers import AutoImageProcessor

    from coop_hf.data import with_coop_transform

    images = sorted((DATA / "oxford_flowers" / "jpg").glob("*.jpg"))[:4]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES[:2])})
    train = datasets.Dataset.from_dict({"image": [str(p) for p in images], "label": [0, 1, 0, 1]}, features=features)
    model = CLIPLoRAModel.from_clip(str(tiny_clip_dir), CLASSNAMES[:2])
    args = CoOpTrainingArguments(
        str(tmp_path), num_train_epochs=1, max_steps=4, per_device_train_batch_size=2, learning_rate=2e-4,
        weight_decay=1e-2, logging_strategy="steps", logging_steps=1, disable_tqdm=True, save_strategy="no",
    )  # fmt: skip
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    trainer = CLIPLoRATrainer(model=model, args=args, train_dataset=with_coop_transform(train, processor, train=True))
    trainer.train()
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 1e-2
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    expected = [1e-6 + (2e-4 - 1e-6) * (1 + math.cos(math.pi * step / 4)) / 2 for step in range(4)]
    assert rates == pytest.approx(expected, rel=1e-6)  # the reference's CosineAnnealingLR, stepped every iteration


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_runs_and_reloads_on_the_siglip_families(family, tmp_path):
    """SigLIP's bidirectional text tower takes the plain path; its logits add the bias; NaFlex images work."""
    from tiny_backbones import tiny_backbone

    clip, tokenizer = tiny_backbone(family)
    model = lora_model(family, clip, tokenizer, lora_dropout=0.0)
    pixel_values = torch.randn(2, 3, 64, 64)
    output = model(pixel_values=pixel_values, labels=torch.tensor([0, 1]))
    output.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, clip_model=clip, tokenizer=tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)

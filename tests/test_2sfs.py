"""2SFS against the official code (FarinaMatteo/rethinking_fewshot_vlms: fs/twostage.py's run_twostage on its copy of
openai/CLIP's model code), run outside this repository by tests/fixtures/make_2sfs_official.py on the same seeded
random weights converted to OpenAI's layout: tests/fixtures/2sfs_official.json holds its logits and gradients of each
stage, its learning rates, the classifier it initialised and trained, and its selective-inference logits."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModel, CLIPConfig, CLIPModel

from coop_hf import TwoStageConfig, TwoStageModel
from coop_hf.methods.two_stage.trainer import TwoStageTrainer, first_stage_steps
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA
from tests.test_maple import CLASSNAMES, IMAGE_SIZE
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, stages

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "2sfs_official.json").read_text())
LAYERS = 2  # both towers of the fixture's CLIP


@pytest.fixture(scope="module")
def official_clip():
    """The fixture's tiny CLIP: the seeded random weights its generator converted to OpenAI's layout."""
    torch.manual_seed(0)
    config = CLIPConfig(text_config=FIXTURE["text_config"], vision_config=FIXTURE["vision_config"], projection_dim=32)
    clip = CLIPModel(config).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
    checksum = sum(float(value.double().sum()) for value in clip.state_dict().values())
    assert checksum == pytest.approx(FIXTURE["weights_checksum"], rel=1e-12), "torch drew other random weights"
    return clip


def ours(name: str) -> str:
    """The peft LayerNorm copy of an OpenAI CLIP LayerNorm parameter ("visual.transformer.resblocks.0.ln_1.weight")."""
    name = name.replace("visual.transformer.resblocks", "clip.vision_model.encoder.layers")
    name = name.replace("transformer.resblocks", "clip.text_model.encoder.layers")
    module, kind = name.replace("ln_1", "layer_norm1").replace("ln_2", "layer_norm2").rsplit(".", 1)
    return f"{module}.ln_tuning_layers.default.{kind}"


def train_images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def eval_images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def fixture_logits(values: list[float], classes: int) -> torch.Tensor:
    return torch.tensor(values).view(-1, classes)


def after_stage_one(clip, tokenizer) -> TwoStageModel:
    """A model with the LayerNorms the official stage one ended with."""
    model = TwoStageModel.from_clip(clip, FIXTURE["base"], tokenizer=tokenizer)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, values in FIXTURE["stage_two"]["layer_norms"].items():
            parameters[ours(name)].copy_(torch.tensor(values).view_as(parameters[ours(name)]))
    return model


def test_stage_one_logits_and_every_layer_norm_gradient_match_the_official_code(official_clip, clip_tokenizer):
    """Stage one on CLIP's weights: the same LayerNorms trained (those of every transformer layer of both towers;
    the official selection leaves ln_pre, ln_post and ln_final frozen), the same logits and gradients."""
    model = TwoStageModel.from_clip(official_clip, FIXTURE["base"], tokenizer=clip_tokenizer).train()
    trainable = sorted(name for name, parameter in model.named_parameters() if parameter.requires_grad)
    assert trainable == sorted(ours(name) for name in FIXTURE["trainable"])
    output = model(pixel_values=train_images(), labels=torch.tensor(FIXTURE["labels"]))
    output.loss.backward()
    assert_close_fp32(output.logits.detach(), fixture_logits(FIXTURE["logits"][0], 3), depth=stages(LAYERS))
    parameters = dict(model.named_parameters())
    for name, grad in FIXTURE["stage_one"]["grads"].items():
        expected = torch.tensor(grad).view_as(parameters[ours(name)])
        assert_close_fp32(parameters[ours(name)].grad, expected, depth=stages(LAYERS, backward=True), msg=name)
    assert model.classifier.grad is None
    assert not any("ln_tuning" in name for name, _ in official_clip.named_parameters())  # the backbone is untouched


def test_stage_two_classifier_init_logits_and_gradient_match_the_official_code(official_clip, clip_tokenizer):
    """Stage two from the official stage one's LayerNorms: the classifier starts as their normalised text features,
    and its first step's logits and classifier gradient are the official ones; the LayerNorms are frozen."""
    model = after_stage_one(official_clip, clip_tokenizer).train()
    model.start_second_stage()
    assert model.config.fitted_classnames == FIXTURE["base"] and model.second_stage
    assert [name for name, parameter in model.named_parameters() if parameter.requires_grad] == ["classifier"]
    expected_init = torch.tensor(FIXTURE["stage_two"]["classifier_init"]).view_as(model.classifier)
    assert_close_fp32(model.classifier.detach(), expected_init, depth=stages(LAYERS))
    with torch.no_grad():
        model.classifier.copy_(expected_init)  # the gradient below from the official starting point
    output = model(pixel_values=train_images(), labels=torch.tensor(FIXTURE["labels"]))
    output.loss.backward()
    first = FIXTURE["first_stage_iters"]
    assert_close_fp32(output.logits.detach(), fixture_logits(FIXTURE["logits"][first], 3), depth=stages(LAYERS))
    expected_grad = torch.tensor(FIXTURE["stage_two"]["grads"]["classifier"]).view_as(model.classifier)
    assert_close_fp32(model.classifier.grad, expected_grad, depth=stages(LAYERS, backward=True))
    assert all(parameter.grad is None for parameter in model.layer_norm_parameters())


@pytest.mark.parametrize("categories", list(FIXTURE["infer"]))
def test_selective_inference_matches_the_official_infer(official_clip, clip_tokenizer, categories):
    """Base classes take the trained classifier's rows, new ones the adapted text tower, in any mix and order."""
    model = after_stage_one(official_clip, clip_tokenizer)
    model.start_second_stage()
    with torch.no_grad():
        model.classifier.copy_(torch.tensor(FIXTURE["stage_two"]["final_classifier"]).view_as(model.classifier))
    classnames = categories.split(",")
    model.set_classnames(classnames)
    assert model.classifier_rows.tolist() == [FIXTURE["base"].index(n) if n in FIXTURE["base"] else -1
                                              for n in classnames]  # fmt: skip
    with torch.no_grad():
        logits = model.eval()(pixel_values=eval_images()).logits
    expected = fixture_logits(FIXTURE["infer"][categories], len(classnames))
    assert_close_fp32(logits, expected, depth=stages(LAYERS))


def test_the_stage_split_and_the_learning_rates_are_the_official_ones(official_clip, clip_tokenizer, tmp_path):
    total = FIXTURE["total_iters"]
    assert first_stage_steps(total, 0.6) == FIXTURE["first_stage_iters"] == 3
    model = TwoStageModel.from_clip(official_clip, FIXTURE["base"], tokenizer=clip_tokenizer)
    args = CoOpTrainingArguments(
        str(tmp_path), num_train_epochs=1, max_steps=total, learning_rate=FIXTURE["lr"], weight_decay=1e-2,
        save_strategy="no",
    )  # fmt: skip
    trainer = TwoStageTrainer(model=model, args=args)
    scheduler = trainer.create_scheduler(total, trainer.create_optimizer())
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(FIXTURE["learning_rates"], rel=1e-9)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    assert optimizer.defaults["weight_decay"] == 1e-2


class FixedBatches(torch.utils.data.Dataset):
    """The fixture's training images, untransformed: every step sees the official run's batch."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": train_images()[index], "labels": torch.tensor(FIXTURE["labels"][index])}


def test_the_trainer_runs_the_two_stages_in_one_budget(official_clip, clip_tokenizer, tmp_path):
    """Five steps: the LayerNorms move in the first three only, the classifier starts at step three from the adapted
    text features and moves in the last two; the run ends where the official one does."""
    from transformers import TrainerCallback

    model = TwoStageModel.from_clip(official_clip, FIXTURE["base"], tokenizer=clip_tokenizer)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            norms = torch.cat([p.detach().flatten() for p in model.layer_norm_parameters()]).clone()
            snapshots.append((norms, model.classifier.detach().clone(), model.second_stage))

    args = CoOpTrainingArguments(
        str(tmp_path), num_train_epochs=1, max_steps=5, per_device_train_batch_size=4, learning_rate=FIXTURE["lr"],
        weight_decay=1e-2, save_strategy="no", disable_tqdm=True, report_to=[], logging_strategy="no",
    )  # fmt: skip
    trainer = TwoStageTrainer(model=model, args=args, train_dataset=FixedBatches(), callbacks=[Snapshot()])
    trainer.train()
    assert [stage for _, _, stage in snapshots] == [False, False, False, True, True]
    moved = [not torch.equal(a[0], b[0]) for a, b in zip(snapshots, snapshots[1:], strict=False)]
    assert moved == [True, True, False, False]
    assert not torch.equal(snapshots[3][1], snapshots[4][1]) and torch.count_nonzero(snapshots[2][1]) == 0
    # the end of the run is the official one: the LayerNorms went through stage one's three steps (forward and
    # backward through the towers each); the classifier then through one forward from them and two steps of the head
    first = FIXTURE["first_stage_iters"]
    norms_depth = stages(LAYERS, backward=True, steps=first)
    classifier_depth = norms_depth + stages(LAYERS) + stages(0, backward=True, steps=5 - first)
    parameters = dict(model.named_parameters())
    for name, values in FIXTURE["stage_two"]["layer_norms"].items():
        expected = torch.tensor(values).view_as(parameters[ours(name)])
        assert_close_fp32(parameters[ours(name)].detach(), expected, depth=norms_depth, msg=name)
    expected = torch.tensor(FIXTURE["stage_two"]["final_classifier"]).view_as(model.classifier)
    assert_close_fp32(model.classifier.detach(), expected, depth=classifier_depth)


@pytest.mark.parametrize("checkpoint", ["checkpoint-2", "checkpoint-4"])
def test_a_run_resumed_in_either_stage_ends_where_the_uninterrupted_one_does(
    official_clip, clip_tokenizer, tmp_path, checkpoint
):
    """Resumed in stage one, stage two still starts at step three; resumed in stage two, the loaded classifier is
    kept (not initialised again)."""

    def run(output_dir, resume=None) -> TwoStageModel:
        model = TwoStageModel.from_clip(official_clip, FIXTURE["base"], tokenizer=clip_tokenizer)
        args = CoOpTrainingArguments(
            str(output_dir), num_train_epochs=1, max_steps=5, per_device_train_batch_size=2, learning_rate=0.05,
            weight_decay=1e-2, save_strategy="steps", save_steps=1, save_total_limit=None, disable_tqdm=True,
            report_to=[], logging_strategy="no",
        )  # fmt: skip
        TwoStageTrainer(model=model, args=args, train_dataset=FixedBatches()).train(resume_from_checkpoint=resume)
        return model

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / checkpoint))
    assert resumed.config.fitted_classnames == FIXTURE["base"]
    assert torch.equal(resumed.classifier, full.classifier)
    for ours_norm, full_norm in zip(resumed.layer_norm_parameters(), full.layer_norm_parameters(), strict=True):
        assert torch.equal(ours_norm, full_norm)


def test_saved_as_layer_norms_and_classifier_that_peft_and_coop_hf_load(official_clip, clip_tokenizer, tmp_path):
    model = after_stage_one(official_clip, clip_tokenizer)
    model.start_second_stage()
    model.set_classnames(FIXTURE["mixed"])
    model.eval().save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "model.safetensors"} <= {
        path.name for path in tmp_path.iterdir()
    }
    images = eval_images()
    with torch.no_grad():
        expected = model(pixel_values=images).logits
        loaded = AutoModel.from_pretrained(tmp_path, clip_model=official_clip, tokenizer=clip_tokenizer)
        assert type(loaded) is TwoStageModel and loaded.config.fitted_classnames == FIXTURE["base"]
        assert sorted(loaded.prompt_state_dict()) == sorted(model.prompt_state_dict())
        torch.testing.assert_close(loaded(pixel_values=images).logits, expected, rtol=0, atol=0)
        # peft loads stage one's backbone: its logits are the adapted text tower's on every class
        peft_model = PeftModel.from_pretrained(copy.deepcopy(official_clip), tmp_path)
        texts = [model.config.template.format(name) for name in FIXTURE["mixed"]]
        inputs = clip_tokenizer(texts, padding=True, return_tensors="pt")
        peft_logits = peft_model(**inputs, pixel_values=images).logits_per_image
        text = F.normalize(model.encode_class_prompts(), dim=-1)
        image = F.normalize(model.image_features(images, None), dim=-1)
    assert_close_fp32(peft_logits, model.backbone.logits(image, text), depth=stages(LAYERS))


def test_settings_checks_and_the_official_defaults(clip_tokenizer, clip_and_tokenizer):
    config = TwoStageConfig(classnames=CLASSNAMES)  # main.py: --n_iters_frac 0.6, --ln_modality both, starts 0
    assert (config.first_stage_fraction, config.ln_encoder, config.ln_vision_start, config.ln_text_start) == (
        0.6, "both", 0, 0
    )  # fmt: skip
    assert config.template == "a photo of a {}."  # datasets/*.py: template[0] on every dataset
    assert "fitted_classnames" not in TwoStageConfig.prompt_settings()
    with pytest.raises(ValueError, match=r"ln_encoder \(--ln_encoder\) is one of text, vision, both"):
        TwoStageConfig(classnames=CLASSNAMES, ln_encoder="all")
    with pytest.raises(ValueError, match=r"first_stage_fraction"):
        TwoStageConfig(classnames=CLASSNAMES, first_stage_fraction=1.5)
    clip, tokenizer = clip_and_tokenizer
    vision = TwoStageModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, ln_encoder="vision", ln_vision_start=1)
    tuned = {name.split(".ln_tuning")[0] for name, _ in vision.named_parameters() if "ln_tuning" in name}
    assert tuned == {
        "clip.vision_model.encoder.layers.1.layer_norm1",
        "clip.vision_model.encoder.layers.1.layer_norm2",
    }
    with pytest.raises(ValueError, match="selects none"):
        TwoStageModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, ln_encoder="text", ln_text_start=2)


def test_stage_one_on_the_clip_like_families_equals_the_plain_forward(clip_like_backbone):
    """The fast shared-prefix text path on CLIP's and MetaCLIP 2's towers: stage one's logits and LayerNorm gradients
    equal those of the `peft`-adapted backbone's own forward (every prompt through the whole text tower)."""
    family, clip, tokenizer = clip_like_backbone
    model = TwoStageModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer).train()
    norms = model.layer_norm_parameters()
    with torch.no_grad():
        for parameter in norms:  # away from the identity LayerNorms a random init has
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3])
    output = model(pixel_values=pixel_values, labels=labels)
    grads = torch.autograd.grad(output.loss, norms)
    texts = [model.config.template.format(name) for name in CLASSNAMES]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    expected = model.clip(**inputs, pixel_values=pixel_values).logits_per_image
    expected_grads = torch.autograd.grad(F.cross_entropy(expected, labels), norms)
    assert_close_fp32(output.logits.detach(), expected.detach(), depth=stages(LAYERS))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_close_fp32(grad, expected_grad, depth=stages(LAYERS, backward=True))


def test_recipe_and_the_official_iterations(tiny_clip_dir):
    """Transcribed by hand from main.py's defaults: AdamW lr 2e-4, weight decay 1e-2, batch 32, 300 x shots
    iterations (--n_iters 300), the same in both of the paper's settings; no config for the other protocols."""
    from coop_hf.runners import Experiment
    from coop_hf.runners.settings import RunSettings

    method = PROMPT_METHODS["2sfs"]
    assert method.trainer_class is TwoStageTrainer and method.model_class is TwoStageModel
    for protocol in ("few_shot", "base_to_new"):
        recipe = method.recipes[protocol]
        assert recipe.training == {
            "learning_rate": 2e-4, "weight_decay": 1e-2, "per_device_train_batch_size": 32, "keep_last_batch": True
        }  # fmt: skip
        assert recipe.steps_per_shot == 300 and "FarinaMatteo/rethinking_fewshot_vlms:main.py" in recipe.source
    assert method.recipes["cross_dataset"].uses == method.recipes["domain_generalization"].uses == "few_shot"
    experiment = Experiment.load(str(tiny_clip_dir), "oxford_flowers", str(DATA))
    planned = method.plan(experiment, RunSettings(shots=4, seeds=[1]), CoOpTrainingArguments("unused"), {})
    args = planned.args
    assert (args.learning_rate, args.weight_decay, args.per_device_train_batch_size) == (2e-4, 1e-2, 32)
    assert args.max_steps == 300 * 4 and args.keep_last_batch


@pytest.mark.slow
def test_trained_by_the_script_in_two_stages(tiny_clip_dir, tmp_path):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", "2sfs", "--max_steps", "4")
    arguments.remove("--n_ctx"), arguments.remove("4")  # a CoOp setting
    results = run_in_process(arguments)
    assert results["method"] == "2sfs" and results["first_stage_fraction"] == 0.6
    folder = tmp_path / "seed1"
    assert {"adapter_config.json", "adapter_model.safetensors", "model.safetensors"} <= {
        path.name for path in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert config["fitted_classnames"] == config["classnames"]  # stage two ran (steps 2 and 3 of 4)
    assert "LayerNorms" in (folder / "README.md").read_text()


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_runs_and_reloads_on_the_siglip_families(family, tmp_path):
    """SigLIP's bidirectional text tower takes the plain path; its logits add the bias."""
    from tiny_backbones import tiny_backbone

    clip, tokenizer = tiny_backbone(family)
    model = TwoStageModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    model(pixel_values=pixel_values, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.layer_norm_parameters())
    model.start_second_stage()
    model(pixel_values=pixel_values, labels=torch.tensor([0, 1])).loss.backward()
    assert model.classifier.grad.abs().sum() > 0
    model.set_classnames(["tulip", "rose", "lily"])
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, clip_model=clip, tokenizer=tokenizer)
    assert loaded.classifier_rows.tolist() == [3, 2, -1]
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)

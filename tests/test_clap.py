"""CLAP and ZS-LP against the official code (jusiro/CLAP: trainers/adapters.py, ADAPTER.train on Dassl's optimizer,
scheduler and trainer), run on the same seeded features by tests/fixtures/make_clap_official.py: the initial and
final multipliers, the penalty parameters of the outer steps, the trained prototypes and the test logits in
tests/fixtures/clap_official.json."""

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from coop_hf import CLAPConfig, CLAPModel, backbone_for
from coop_hf.data.transforms import RRC_SCALE
from coop_hf.methods.clap.configuration_clap import clap_templates
from coop_hf.methods.clap.trainer import CLAPTrainer, fit_clap, outer_step, zero_shot_multipliers
from coop_hf.runners.methods import PROMPT_METHODS
from tests.test_tip_adapter import CachedSplits, fit
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, stages

OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "clap_official.json").read_text())
CLASSNAMES = [f"class {index}" for index in range(8)]


def decode(entry: dict) -> torch.Tensor:
    array = np.frombuffer(base64.b64decode(entry["base64"]), dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
    return torch.from_numpy(array.astype(entry["dtype"]).reshape(entry["shape"]))


INPUTS = {name: decode(entry) for name, entry in OFFICIAL["inputs"].items()}


def official(case: str, key: str) -> torch.Tensor:
    return torch.tensor(OFFICIAL["cases"][case][key])


def steps(case: str) -> int:
    """The case's optimizer steps: epochs x Dassl's batches per epoch over the 32 images."""
    values = OFFICIAL["cases"][case]
    images, batch = len(INPUTS["labels"]), values["batch_size"]
    return values["epochs"] * (images // batch if images >= batch else math.ceil(images / batch))


def fitted_model(clip, tokenizer, case: str, tmp_path) -> tuple[CLAPModel, dict]:
    """A model fitted by CLAPTrainer on the fixture's views with the official case's settings, its zero-shot
    prototypes the fixture's text features."""
    values = OFFICIAL["cases"][case]
    model = CLAPModel.from_clip(
        clip, CLASSNAMES, tokenizer=tokenizer, zero_shot_constraint=values["constraint"] != "none",
        adaptive_multipliers="adaptative" in values["constraint"], augment_views=values["augmented_passes"],
    )  # fmt: skip
    model.register_buffer("zero_shot", INPUTS["text"].clone(), persistent=False)
    splits = CachedSplits(INPUTS["views"], INPUTS["labels"], None, None, crop_scale=RRC_SCALE)
    _, output = fit(
        model, splits, tmp_path, CLAPTrainer, num_train_epochs=values["epochs"], learning_rate=values["lr"],
        weight_decay=values["weight_decay"], per_device_train_batch_size=values["batch_size"], seed=values["seed"],
    )  # fmt: skip
    assert splits.calls == [values["augmented_passes"]]  # the 20 augmented views, no validation split
    return model, output.metrics


def test_the_fixture_holds_the_official_recipe():
    for values in OFFICIAL["cases"].values():
        assert (values["lr"], values["momentum"], values["weight_decay"]) == (0.1, 0.9, 0.0)
        assert (values["warmup_epochs"], values["warmup_lr"], values["augmented_passes"]) == (1, 1e-5, 20)
        assert not values["logit_scale_trained"]  # the temperature stays CLIP's
    recipe = PROMPT_METHODS["clap"].recipe().training
    assert recipe == {"num_train_epochs": 300, "learning_rate": 0.1, "weight_decay": 0.0,
                      "per_device_train_batch_size": 256}  # fmt: skip
    assert PROMPT_METHODS["zs-lp"].recipe().training == recipe


@pytest.mark.parametrize("case", ["clap", "clap_adaptive", "zs_lp"])
def test_the_fit_matches_the_official_code(clip_and_tokenizer, case, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    assert backbone_for(clip).logit_scale.item() == pytest.approx(OFFICIAL["logit_scale"])
    model, metrics = fitted_model(clip, tokenizer, case, tmp_path)
    depth = stages(0, backward=True, steps=steps(case))  # every step's forward and backward pass
    if case != "zs_lp":
        initial = zero_shot_multipliers(
            model.backbone.logits(F.normalize(INPUTS["views"].flatten(0, 1), dim=-1), F.normalize(INPUTS["text"])),
            INPUTS["labels"].repeat(20), len(CLASSNAMES),
        )  # fmt: skip
        assert_close_fp32(initial, official(case, "initial_multipliers"), depth=2)  # the logits, a softmax mean
        assert metrics["initial_multiplier_mean"] == pytest.approx(initial.mean().item(), rel=1e-6)
        assert_close_fp32(model.multipliers, official(case, "multipliers"), depth=depth)
    else:
        assert torch.equal(model.multipliers, torch.zeros(len(CLASSNAMES)))
    assert_close_fp32(model.prototypes, official(case, "prototypes"), depth=depth)
    assert_close_fp32(model(image_embeds=INPUTS["test"]).logits, official(case, "test_logits"), depth=depth + 1)
    assert model.config.fitted_classnames == CLASSNAMES and metrics["batches_per_epoch"] == steps(case) // 6


def test_without_the_penalty_or_the_outer_steps_the_fit_misses_the_official_values(clip_and_tokenizer):
    """The test above tells the three fits apart: each one's results lie far outside the float32 rule of the
    others'."""
    scale = backbone_for(clip_and_tokenizer[0]).logit_scale.exp()
    values = OFFICIAL["cases"]["clap"]
    settings = dict(
        epochs=values["epochs"], learning_rate=values["lr"], batch_size=values["batch_size"], seed=values["seed"]
    )
    depth = stages(0, backward=True, steps=steps("clap"))
    unconstrained, _, _ = fit_clap(INPUTS["views"], INPUTS["labels"], INPUTS["text"], scale, constraint=False,
                                   **settings)  # fmt: skip
    with pytest.raises(AssertionError):
        assert_close_fp32(unconstrained, official("clap", "prototypes"), depth=depth)
    _, fixed, _ = fit_clap(INPUTS["views"], INPUTS["labels"], INPUTS["text"], scale, **settings)
    with pytest.raises(AssertionError):
        assert_close_fp32(fixed, official("clap_adaptive", "multipliers"), depth=depth)
    penalty = official("clap_adaptive", "penalty_parameters")
    expected = (official("clap_adaptive", "prototypes") - INPUTS["text"]).pow(2).sum(-1)
    assert_close_fp32(penalty, expected, depth=depth)  # rho is the last squared distance


def test_outer_step_is_the_phr_gradient():
    multipliers, penalty = torch.tensor([0.5, 0.2, 0.0]), torch.tensor([0.0, 2.0, 1.0])
    distance = torch.tensor([0.3, 0.1, 0.4])
    new, rho = outer_step(distance, multipliers, penalty)
    assert torch.equal(new, torch.tensor([0.5, 0.2 + 2.0 * 0.1, 0.4])) and torch.equal(rho, distance)
    new, _ = outer_step(distance, torch.tensor([-1.0, 0.0, 0.0]), penalty)
    assert new[0] == 0  # max(0, lambda + rho h)


def test_a_class_without_training_views_gets_the_mean_multiplier():
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    multipliers = zero_shot_multipliers(logits, torch.tensor([0, 0, 2]), 3)
    own = logits.softmax(-1)
    assert multipliers[0] == pytest.approx(own[0, 0].item()) and multipliers[2] == pytest.approx(own[2, 2].item())
    assert multipliers[1] == pytest.approx((multipliers[0] + multipliers[2]).item() / 2)


def test_fit_refuses_no_epochs_and_keeps_every_row_without_drop_last():
    views, labels = INPUTS["views"][:2], INPUTS["labels"]
    with pytest.raises(ValueError, match="--num_train_epochs 0 is too few"):
        fit_clap(views, labels, INPUTS["text"], 100.0, epochs=0, learning_rate=0.1)
    _, _, metrics = fit_clap(views, labels, INPUTS["text"], 100.0, epochs=2, learning_rate=0.1, batch_size=12,
                             drop_last=False)  # fmt: skip
    assert metrics["batches_per_epoch"] == 3 and metrics["training_rows"] == 64


def test_new_classes_are_zero_shot_and_saved_tensors_reload(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    model = CLAPModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer)
    never_fitted = model(image_embeds=INPUTS["test"]).logits
    zero_shot = model.backbone.logits(F.normalize(INPUTS["test"], dim=-1), F.normalize(model.zero_shot, dim=-1))
    assert_close_fp32(never_fitted, zero_shot, depth=1)
    splits, threads = CachedSplits(INPUTS["views"], INPUTS["labels"], None, None, crop_scale=RRC_SCALE), 2
    torch.set_num_threads(threads)
    fit(model, splits, tmp_path / "fit", CLAPTrainer, num_train_epochs=3, learning_rate=0.1, weight_decay=0.0,
        per_device_train_batch_size=12)  # fmt: skip
    assert torch.get_num_threads() == threads  # the fit ran on one thread and gave the others back
    fitted = model(image_embeds=INPUTS["test"]).logits
    assert not torch.allclose(fitted, never_fitted)
    assert "squared L2 distance" in dict(model.card_settings())["penalty"]

    model.save_pretrained(tmp_path / "clap")
    loaded = AutoModel.from_pretrained(tmp_path / "clap", clip_model=clip, tokenizer=tokenizer)
    assert type(loaded) is CLAPModel and sorted(loaded.prompt_state_dict()) == ["multipliers", "prototypes"]
    assert torch.equal(loaded(image_embeds=INPUTS["test"]).logits, fitted)

    loaded.set_classnames(["class 7", "lily", "class 0"])  # a new class keeps its zero-shot prototype
    logits = loaded(image_embeds=INPUTS["test"]).logits
    assert_close_fp32(logits[:, [0, 2]], fitted[:, [7, 0]], depth=1)
    lily = loaded.backbone.logits(F.normalize(INPUTS["test"], dim=-1), F.normalize(loaded.zero_shot[1:2], dim=-1))
    assert_close_fp32(logits[:, 1:2], lily, depth=1)
    assert "fitted_classnames" not in CLAPConfig.prompt_settings()


def test_zs_lp_is_the_same_model_without_the_penalty(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    zs_lp = PROMPT_METHODS["zs-lp"]
    model = zs_lp.model_class.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, **zs_lp.settings)
    assert model.method_name == "ZS-LP" and dict(model.card_settings())["penalty"] == "none (ZS-LP)"
    with pytest.raises(ValueError, match="ZS-LP .* does not have"):
        CLAPConfig(classnames=CLASSNAMES, zero_shot_constraint=False, adaptive_multipliers=True)
    assert clap_templates("imagenet")[-1] == "a photo of a {}." and len(clap_templates("imagenet")) == 8
    assert clap_templates("dtd") == ["{} texture."]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["clap", "zs-lp"])
def test_clap_runs_from_the_command_line(tiny_clip_dir, tmp_path, method):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", method, "--per_device_train_batch_size", "4")
    del arguments[arguments.index("--n_ctx") : arguments.index("--n_ctx") + 2]  # a CoOp setting
    with pytest.raises(ValueError, match=r"fitted on cached image features.*drop --cached_views"):
        run_in_process([*arguments, "--cached_views", "2"])
    results = run_in_process(arguments)
    assert results["method"] == method and results["epochs"] == 2 and results["templates"] == [
        "a photo of a {}, a type of flower."
    ]  # fmt: skip
    card = (tmp_path / "seed1" / "README.md").read_text()
    assert "SGD lr 0.05" in card and "penalty" in card

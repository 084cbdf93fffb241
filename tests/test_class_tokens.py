"""PTNL's class-token models: Full-Prompt-Tuning (context and class-name tokens learned) and CLS-Tuning (class-name
tokens learned behind the fixed "a photo of a"); the shared-prefix fast path against a plain computation."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel

from coop_hf import ClassTokenConfig, ClassTokenTuningModel
from coop_hf.baselines import zero_shot_logits, zero_shot_weights
from coop_hf.text_encoding import encode_plain
from tests.conftest import DATA, load_example, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

# Two names share their first token: learned, those tokens differ, so they must not join the shared prefix.
CLASSNAMES = ["cat", "golden retriever", "golden eagle", "st. john's wort", "foo (bar)"]
CLS_TUNING = dict(ctx_init="a photo of a", learn_context=False)


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


def image_embeds(seed: int = 1, batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed))


def perturb(model: ClassTokenTuningModel, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.class_embeds.add_(0.05 * torch.randn(model.class_embeds.shape, generator=generator))
        model.prompt_learner.ctx.add_(0.05 * torch.randn(model.prompt_learner.ctx.shape, generator=generator))
    model.prompt_changed()


def reference_text_features(clip, tokenizer, ctx, class_embeds):
    """Text features of "[SOS] ctx <class name tokens>. [EOS]" built by hand (77 tokens, CLIP's tokenizer), the
    class-name tokens taken from `class_embeds` in class order, through the plain encoder."""
    n_ctx = ctx.shape[0]
    ids = tokenizer([f"{' '.join(['X'] * n_ctx)} {name}." for name in CLASSNAMES], padding="max_length", max_length=77)
    ids = torch.tensor(ids["input_ids"])
    embeds = clip.text_model.embeddings.token_embedding(ids)
    counts = [len(tokenizer(name, add_special_tokens=False)["input_ids"]) for name in CLASSNAMES]
    rows = []
    for row, names in enumerate(class_embeds.split(counts)):
        start = 1 + n_ctx
        rows.append(torch.cat([embeds[row, :1], ctx, names, embeds[row, start + len(names) :]]))
    return encode_plain(clip, torch.stack(rows), ids.argmax(dim=-1))


@pytest.mark.parametrize("settings", [CLS_TUNING, dict(ctx_init="a photo of a")], ids=["cls-tuning", "full-prompt"])
def test_untrained_with_a_photo_of_a_is_zero_shot_clip(tiny_clip, clip_tokenizer, settings):
    model = ClassTokenTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, **settings)
    weights = zero_shot_weights(tiny_clip, clip_tokenizer, CLASSNAMES, ["a photo of a {}."])
    images = image_embeds()
    with torch.no_grad():
        logits = model(image_embeds=images).logits
    assert_close_fp32(logits, zero_shot_logits(tiny_clip, weights, images), depth=stages(2))
    counts = [len(clip_tokenizer(name, add_special_tokens=False)["input_ids"]) for name in CLASSNAMES]
    assert model.class_embeds.shape == (sum(counts), 32)


@pytest.mark.parametrize("settings", [CLS_TUNING, dict(ctx_init="a photo of a"), dict(n_ctx=4)])
def test_fast_path_equals_the_plain_computation(tiny_clip, clip_tokenizer, settings):
    model = ClassTokenTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, **settings)
    perturb(model)
    images, labels = image_embeds(), torch.tensor([0, 1, 2, 3, 4, 1])
    model.train()
    loss = model(image_embeds=images, labels=labels).loss
    tensors = [model.class_embeds, *([model.prompt_learner.ctx] if model.config.learn_context else [])]
    grads = torch.autograd.grad(loss, tensors)

    ctx = model.prompt_learner.ctx.detach().clone().requires_grad_(True)
    names = model.class_embeds.detach().clone().requires_grad_(True)
    text = F.normalize(reference_text_features(tiny_clip, clip_tokenizer, ctx, names), dim=-1)
    logits = tiny_clip.logit_scale.exp() * F.normalize(images, dim=-1) @ text.t()
    expected_loss = F.cross_entropy(logits, labels)
    expected_grads = torch.autograd.grad(expected_loss, [names, ctx][: len(tensors)])
    assert_close_fp32(loss, expected_loss, depth=stages(2))
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert expected.abs().max() > 1e-4
        assert_close_fp32(grad, expected, depth=stages(2, backward=True))
    with torch.no_grad():  # the cached inference path too
        assert_close_fp32(model.eval()(image_embeds=images).logits, logits, depth=stages(2))


def test_class_name_tokens_shared_by_every_class_stay_out_of_the_shared_prefix(tiny_clip, clip_tokenizer):
    names = ["golden retriever", "golden eagle"]
    model = ClassTokenTuningModel.from_clip(tiny_clip, names, tokenizer=clip_tokenizer, **CLS_TUNING)
    with torch.no_grad():
        model.class_embeds[0].add_(torch.randn(32, generator=torch.Generator().manual_seed(0)))  # first "golden"
    expected = encode_plain(tiny_clip, model.prompt_embeddings(), model.prompt_learner.eot_positions)
    assert_close_fp32(model.get_text_features(), expected, depth=stages(2))


def test_cached_text_features_follow_in_place_updates_of_the_class_tokens(tiny_clip, clip_tokenizer):
    model = ClassTokenTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, **CLS_TUNING).eval()
    images = image_embeds()
    with torch.no_grad():
        before = model(image_embeds=images).logits
        model.class_embeds.add_(torch.randn(model.class_embeds.shape))  # in place, as an optimizer step
        after = model(image_embeds=images).logits
        model.prompt_changed()
        torch.testing.assert_close(after, model(image_embeds=images).logits, rtol=0, atol=0)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("position", ["front", "middle"])
def test_other_class_token_positions_match_the_plain_encoder(tiny_clip, clip_tokenizer, position):
    names = ["cat", "golden retriever", "golden eagle"]
    model = ClassTokenTuningModel.from_clip(
        tiny_clip, names, tokenizer=clip_tokenizer, n_ctx=4, class_token_position=position
    )
    perturb(model)
    embeds = model.prompt_embeddings()
    positions = model.class_name_positions[model.class_name_rows == 1]
    assert positions.tolist() == ([1, 2] if position == "front" else [3, 4])
    torch.testing.assert_close(embeds[1, positions], model.class_embeds[1:3], rtol=0, atol=0)
    expected = encode_plain(tiny_clip, embeds, model.prompt_learner.eot_positions)
    assert_close_fp32(model.get_text_features(), expected, depth=stages(2))


@pytest.mark.parametrize("learn_context", [False, True])
def test_only_the_intended_tensors_train_and_are_saved(tiny_clip_dir, tmp_path, learn_context):
    model = ClassTokenTuningModel.from_clip(str(tiny_clip_dir), CLASSNAMES, ctx_init="a photo of a",
                                            learn_context=learn_context)  # fmt: skip
    trained = ["prompt_learner.ctx", "class_embeds"] if learn_context else ["class_embeds"]
    assert sorted(name for name, p in model.named_parameters() if p.requires_grad) == sorted(trained)
    assert sorted(model.prompt_state_dict()) == sorted(trained)
    clip_before = {key: value.clone() for key, value in model.clip.state_dict().items()}
    ctx_before, names_before = model.prompt_learner.ctx.clone(), model.class_embeds.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    model(image_embeds=image_embeds(), labels=torch.tensor([0, 1, 2, 3, 4, 0])).loss.backward()
    optimizer.step()
    assert all(torch.equal(value, clip_before[key]) for key, value in model.clip.state_dict().items())
    assert not torch.equal(model.class_embeds, names_before)
    assert torch.equal(model.prompt_learner.ctx, ctx_before) is not learn_context

    model.save_pretrained(tmp_path)
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(trained)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["model_type"], saved["learn_context"]) == ("class-token-tuning", learn_context)
    images = image_embeds(3)
    for reloaded in (ClassTokenTuningModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(reloaded) is ClassTokenTuningModel and reloaded.config.learn_context is learn_context
        assert reloaded.method_name == ("Full-Prompt-Tuning" if learn_context else "CLS-Tuning")
        with torch.no_grad():
            torch.testing.assert_close(
                reloaded(image_embeds=images).logits, model.eval()(image_embeds=images).logits, rtol=0, atol=0
            )


def test_errors_name_the_problem_and_the_flag(tiny_clip, clip_tokenizer):
    with pytest.raises(ValueError, match="--ctx_init"):
        ClassTokenConfig(classnames=CLASSNAMES, learn_context=False)
    model = ClassTokenTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, **CLS_TUNING)
    with pytest.raises(ValueError, match="cannot move to a new class list"):
        model.set_classnames(["rose", "daisy"])
    assert model.config.classnames == CLASSNAMES


def test_model_card_names_the_variant(tiny_clip, clip_tokenizer):
    model = ClassTokenTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, **CLS_TUNING)
    info = model.card_info()
    assert info.method_name == "CLS-Tuning" and info.paper[1] == "https://arxiv.org/abs/2307.11978"
    assert dict(info.settings)["context learned (`learn_context`)"] == "False"


def test_cli_names_fix_the_variant(tiny_clip, clip_tokenizer):
    from coop_hf.runners.methods import PROMPT_METHODS

    experiment = SimpleNamespace(
        backbone=SimpleNamespace(clip=tiny_clip, tokenizer=clip_tokenizer), classnames=CLASSNAMES, dataset="dtd"
    )
    cls_tuning = PROMPT_METHODS["cls-tuning"].prompt_fields(experiment, {"n_ctx": None})
    assert (cls_tuning["learn_context"], cls_tuning["ctx_init"], cls_tuning["n_ctx"]) == (False, "a photo of a", 4)
    full = PROMPT_METHODS["full-prompt"].prompt_fields(experiment, {})
    assert (full["learn_context"], full["ctx_init"], full["n_ctx"]) == (True, None, 16)
    other = PROMPT_METHODS["cls-tuning"].prompt_fields(experiment, {"ctx_init": "a picture of"})
    assert (other["learn_context"], other["ctx_init"]) == (False, "a picture of")


def test_train_script_runs_cls_tuning(tiny_clip_dir, tmp_path):
    results = load_example("train").main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "cls-tuning", "--shots", "1", "--max_steps", "2", "--output_dir", str(tmp_path),
        "--disable_tqdm", "true", "--report_to", "none",
    ])  # fmt: skip
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert recorded["method"] == results["method"] == "cls-tuning"
    assert (recorded["learn_context"], recorded["ctx_init"], recorded["n_ctx"]) == (False, "a photo of a", 4)
    assert 0 <= recorded["accuracy"] <= 100
    prompt = ClassTokenTuningModel.from_pretrained(tmp_path / "seed1")
    assert prompt.config.learn_context is False
    assert list(load_file(tmp_path / "seed1" / "model.safetensors")) == ["class_embeds"]


def test_a_methods_fixed_settings_cannot_be_contradicted():
    from coop_hf.runners import Experiment
    from coop_hf.runners.methods import PROMPT_METHODS
    from tests.conftest import DATA

    experiment = Experiment(None, "oxford_flowers", str(DATA))
    with pytest.raises(ValueError, match="--method cls-tuning fixes --learn_context False"):
        PROMPT_METHODS["cls-tuning"].method_settings(experiment, {"learn_context": True})
    assert PROMPT_METHODS["cls-tuning"].method_settings(experiment, {"learn_context": False})["learn_context"] is False

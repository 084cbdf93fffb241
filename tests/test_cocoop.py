"""CoCoOp equals the reference computation (KaiyangZhou/CoOp trainers/cocoop.py) in logits and gradients, and loads,
saves, moves to new classes and trains like every prompt model."""

import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline

import coop_hf
from coop_hf import CoCoOpConfig, CoCoOpModel, CoOpModel
from coop_hf.data import load_benchmark
from coop_hf.methods import Recipe
from coop_hf.runners import LoadedBackbone
from coop_hf.runners.arguments import PromptArguments, prompt_settings
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.prompt_learning import PromptLearning
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, load_example, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "bird of paradise", "sunflower"]
META_NET_KEYS = [f"meta_net.linear{layer}.{name}" for layer in (1, 2) for name in ("weight", "bias")]
TRAINABLE = ["prompt_learner.ctx", *META_NET_KEYS]


@pytest.fixture(scope="module")
def tiny_clip():
    """Text width 32, projection 64: a meta-network of 64 -> 4 -> 32."""
    config = tiny_clip_config()
    config.projection_dim = 64
    return random_clip(config)


def make_model(clip, tokenizer, classnames=CLASSNAMES, seed=0, **settings) -> CoCoOpModel:
    """A CoCoOp model whose meta-network is far from its initialisation, so that its shift matters visibly."""
    torch.manual_seed(seed)
    model = CoCoOpModel.from_clip(clip, classnames, tokenizer=tokenizer, **settings)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.meta_net.parameters():
            parameter.normal_(std=0.5, generator=generator)
    return model


# -- the reference computation, written from trainers/cocoop.py (PromptLearner, TextEncoder, CustomCLIP) ----------


def reference_token_ids(tokenizer, classnames, prompt_prefix, length=77) -> torch.Tensor:
    """`clip.tokenize(prompt_prefix + " " + name + ".")`: [SOS] ... [EOT] then zeros up to 77 tokens."""
    rows = []
    for name in classnames:
        ids = tokenizer(f"{prompt_prefix} {name}.")["input_ids"]
        rows.append(ids + [0] * (length - len(ids)))
    return torch.tensor(rows)


def reference_text_encoder(clip, prompts: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """TextEncoder.forward: prompts + positional embedding, the causal transformer over all 77 tokens, ln_final, the
    feature at argmax(token id) (the EOT), then the text projection."""
    text_model = clip.text_model
    hidden = prompts + text_model.embeddings.position_embedding.weight[: prompts.shape[1]]
    length = prompts.shape[1]
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
    hidden = text_model.encoder(inputs_embeds=hidden, attention_mask=causal).last_hidden_state
    hidden = text_model.final_layer_norm(hidden)
    return clip.text_projection(hidden[torch.arange(len(hidden)), token_ids.argmax(dim=-1)])


def reference_forward(clip, tokenizer, classnames, ctx, meta_net, image_features, labels, prompt_prefix):
    """CustomCLIP.forward: [batch, classes] logits and the cross-entropy, from unnormalised image features."""
    n_ctx = len(ctx)
    token_ids = reference_token_ids(tokenizer, classnames, prompt_prefix)
    embedding = clip.text_model.embeddings.token_embedding(token_ids)
    token_prefix, token_suffix = embedding[:, :1], embedding[:, 1 + n_ctx :]
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    bias = meta_net(image_features).unsqueeze(1)  # [batch, 1, width]
    ctx_shifted = ctx.unsqueeze(0) + bias  # [batch, n_ctx, width]
    prompts = torch.stack(
        [
            torch.cat([token_prefix, ctx_i.unsqueeze(0).expand(len(classnames), -1, -1), token_suffix], dim=1)
            for ctx_i in ctx_shifted
        ]
    )  # [batch, classes, 77, width]
    logits = []
    for prompts_i, image_i in zip(prompts, image_features, strict=True):
        text_features = reference_text_encoder(clip, prompts_i, token_ids)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits.append(clip.logit_scale.exp() * image_i @ text_features.t())
    logits = torch.stack(logits)
    return logits, F.cross_entropy(logits, labels)


def reference_meta_net(model: CoCoOpModel) -> torch.nn.Sequential:
    """The reference's meta-network (Linear, ReLU, Linear) holding copies of the model's weights."""
    linear1, linear2 = model.meta_net.linear1, model.meta_net.linear2
    net = torch.nn.Sequential(
        OrderedDict(
            linear1=torch.nn.Linear(linear1.in_features, linear1.out_features),
            relu=torch.nn.ReLU(inplace=True),
            linear2=torch.nn.Linear(linear2.in_features, linear2.out_features),
        )
    )
    net.load_state_dict(model.meta_net.state_dict())
    return net


def reference_logits_loss_and_grads(model, tokenizer, image_features, labels, prompt_prefix):
    ctx = torch.nn.Parameter(model.prompt_learner.ctx.detach().clone())
    meta_net = reference_meta_net(model)
    logits, loss = reference_forward(
        model.clip, tokenizer, model.classnames, ctx, meta_net, image_features, labels, prompt_prefix
    )
    loss.backward()
    parameters = dict(meta_net.named_parameters())
    grads = [ctx.grad] + [parameters[key.removeprefix("meta_net.")].grad for key in META_NET_KEYS]
    return logits.detach(), loss.detach(), grads


def our_logits_loss_and_grads(model, labels, **inputs):
    model.zero_grad(set_to_none=True)
    output = model(labels=labels, **inputs)
    output.loss.backward()
    parameters = dict(model.named_parameters())
    return output.logits.detach(), output.loss.detach(), [parameters[key].grad for key in TRAINABLE]


def check_equals_reference(model, tokenizer, batch, prompt_prefix="a photo of a", use_pixels=False):
    generator = torch.Generator().manual_seed(batch)
    clip = model.clip
    if use_pixels:
        size = clip.config.vision_config.image_size
        inputs = {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
        with torch.no_grad():
            image_features = clip.get_image_features(**inputs).pooler_output
    else:
        image_features = torch.randn(batch, clip.config.projection_dim, generator=generator)
        inputs = {"image_embeds": image_features}
    labels = torch.randint(0, len(model.classnames), (batch,), generator=generator)
    logits, loss, grads = our_logits_loss_and_grads(model, labels, **inputs)
    ref_logits, ref_loss, ref_grads = reference_logits_loss_and_grads(
        model, tokenizer, image_features, labels, prompt_prefix
    )
    assert logits.shape == (batch, len(model.classnames))
    # The layers in series: the text tower's, after the vision tower's where the meta-network reads pixels.
    layers = clip.config.text_config.num_hidden_layers + (
        clip.config.vision_config.num_hidden_layers if use_pixels else 0
    )
    assert_close_fp32(logits, ref_logits, depth=stages(layers))
    assert_close_fp32(loss, ref_loss, depth=stages(layers))
    for key, grad, ref_grad in zip(TRAINABLE, grads, ref_grads, strict=True):
        assert ref_grad.abs().max() > 0, key
        assert_close_fp32(grad, ref_grad, depth=stages(layers, backward=True), msg=key)


# -- equivalence ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
def test_tiny_logits_and_gradients_equal_the_reference(tiny_clip, clip_tokenizer, batch):
    check_equals_reference(make_model(tiny_clip, clip_tokenizer), clip_tokenizer, batch)


def test_tiny_from_pixels_equals_the_reference(tiny_clip, clip_tokenizer):
    check_equals_reference(make_model(tiny_clip, clip_tokenizer), clip_tokenizer, 3, use_pixels=True)


def test_random_context_equals_the_reference(tiny_clip, clip_tokenizer):
    """ctx_init="" : six N(0, 0.02) context vectors, prompts "X X X X X X <class>." in the reference."""
    model = make_model(tiny_clip, clip_tokenizer, n_ctx=6, ctx_init="")
    assert model.config.ctx_init is None and model.prompt_learner.ctx.shape == (6, 32)
    check_equals_reference(model, clip_tokenizer, 2, prompt_prefix=" ".join(["X"] * 6))


@pytest.mark.parametrize("batch", [1, 4])
def test_vit_b32_logits_and_gradients_equal_the_reference(vit_b32_clip, clip_tokenizer, batch):
    model = make_model(vit_b32_clip, clip_tokenizer, classnames=CLASSNAMES[:4])
    with torch.no_grad():  # the initial meta-network, scaled up: the shift is a sizeable part of the context
        for parameter in model.meta_net.parameters():
            parameter.mul_(0.1)
    check_equals_reference(model, clip_tokenizer, batch)


def test_context_starts_as_the_reference_phrase_embedding(tiny_clip, clip_tokenizer):
    """ctx = token_embedding(clip.tokenize("a photo of a"))[0, 1:1 + 4]; the meta-network is PyTorch's default."""
    model = CoCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    ids = reference_token_ids(clip_tokenizer, ["x"], "a photo of a")[:1]
    expected = tiny_clip.text_model.embeddings.token_embedding(ids)[0, 1:5]
    torch.testing.assert_close(model.prompt_learner.ctx, expected, rtol=0, atol=0)
    bound = 1 / 64**0.5  # U(+-1/sqrt(fan_in)) for linear1's weight and bias
    assert model.meta_net.linear1.weight.abs().max() <= bound and model.meta_net.linear1.weight.std() > bound / 3


def test_zeroed_meta_net_is_coop_with_the_same_context_and_zero_shot_clip(tiny_clip, clip_tokenizer):
    model = make_model(tiny_clip, clip_tokenizer)
    with torch.no_grad():
        model.meta_net.linear2.weight.zero_()
        model.meta_net.linear2.bias.zero_()
    coop = CoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="a photo of a")
    image_embeds = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    inputs = clip_tokenizer([f"a photo of a {name}." for name in CLASSNAMES], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(image_embeds=image_embeds)
        expected = coop(image_embeds=image_embeds).logits
        zero_shot = F.normalize(tiny_clip.get_text_features(**inputs).pooler_output, dim=-1)
    assert_close_fp32(ours.logits, expected, depth=stages(2))
    assert_close_fp32(ours.text_embeds, zero_shot.expand(4, -1, -1), depth=stages(2))


def test_meta_net_sees_the_normalised_image_feature_and_shifts_every_context_token_alike(tiny_clip, clip_tokenizer):
    model = make_model(tiny_clip, clip_tokenizer)
    image_embeds = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(image_embeds=image_embeds).logits
        assert_close_fp32(model(image_embeds=3 * image_embeds).logits, logits, depth=stages(2))
        # Fed the unnormalised feature, the meta-network would shift the context differently.
        shift = model.context_shift(F.normalize(image_embeds, dim=-1))
        assert (model.context_shift(3 * image_embeds) - shift).abs().max() > 1e-2
        zero_shift = model.context_shift(torch.zeros(1, 64))
    assert shift.shape == (2, 32) and not torch.allclose(shift, zero_shift.expand(2, -1))


def test_parameter_count_and_prompt_file_size_on_vit_b32(vit_b32_clip, clip_tokenizer, tmp_path):
    model = CoCoOpModel.from_clip(vit_b32_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    state = model.prompt_state_dict()
    assert sorted(state) == sorted(TRAINABLE)
    assert state["meta_net.linear1.weight"].shape == (32, 512) and state["meta_net.linear2.weight"].shape == (512, 32)
    assert sum(tensor.numel() for tensor in state.values()) == 35_360  # the reference's count for M=4 on 512/512
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 35_360
    model.save_pretrained(tmp_path)
    assert 35_360 * 4 < os.path.getsize(tmp_path / "model.safetensors") < 35_360 * 4 + 2048


# -- configuration -------------------------------------------------------------------------------------------------


def test_config_defaults_and_rejected_settings():
    config = CoCoOpConfig(classnames=["a", "b"])
    assert (config.model_type, config.n_ctx, config.ctx_init) == ("cocoop", 4, "a photo of a")
    assert CoCoOpConfig.prompt_settings() == ("n_ctx", "ctx_init")
    with pytest.raises(ValueError, match="CoCoOp has no class_token_position setting"):
        CoCoOpConfig(classnames=["a"], class_token_position="middle")
    with pytest.raises(ValueError, match="CoCoOp has no class_specific_context setting.*--method coop"):
        CoCoOpConfig(classnames=["a"], class_specific_context=True)
    assert CoCoOpConfig.from_dict(config.to_dict()).ctx_init == "a photo of a"
    assert CoCoOpConfig.from_dict(CoCoOpConfig(classnames=["a"], ctx_init=None).to_dict()).ctx_init is None


def test_n_ctx_without_ctx_init_names_the_flags(tiny_clip, clip_tokenizer):
    with pytest.raises(ValueError, match=r'n_ctx=8 \(--n_ctx\) contradicts .*--ctx_init ""'):
        CoCoOpModel.build_config(tiny_clip, CLASSNAMES, clip_tokenizer, n_ctx=8)
    assert CoCoOpModel.build_config(tiny_clip, CLASSNAMES, clip_tokenizer, n_ctx=4).ctx_init == "a photo of a"
    config = CoCoOpModel.build_config(tiny_clip, CLASSNAMES, clip_tokenizer, ctx_init="a photo of the")
    assert config.n_ctx == 4 and config.ctx_init == "a photo of the"


def test_command_line_rejects_coop_only_flags():
    with pytest.raises(ValueError, match="--method cocoop has no setting --class_token_position"):
        prompt_settings(PromptArguments(class_token_position="middle"), "cocoop")
    assert prompt_settings(PromptArguments(n_ctx=4), "cocoop") == {"n_ctx": 4}


# -- save, load, new classes, pipeline -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tiny_clip_dir, clip_tokenizer, tmp_path_factory):
    model = make_model(str(tiny_clip_dir), clip_tokenizer, classnames=["cat", "dog", "sunflower"])
    folder = tmp_path_factory.mktemp("cocoop-prompt")
    model.save_pretrained(folder)
    return model, folder


def test_save_load_round_trip_gives_identical_logits(saved):
    model, folder = saved
    image_embeds = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    loaded = CoCoOpModel.from_pretrained(folder)
    with torch.no_grad():
        expected = model(image_embeds=image_embeds).logits
        torch.testing.assert_close(loaded(image_embeds=image_embeds).logits, expected, rtol=0, atol=0)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "cocoop"
    card = (folder / "README.md").read_text()
    assert "CoCoOpModel.from_pretrained(" in card and "arxiv.org/abs/2203.05557" in card and "Linear(16, 1)" in card
    with pytest.raises(ValueError, match="not 'coop'"):
        CoOpModel.from_pretrained(folder)


def test_auto_classes_load_it_once_its_class_is_imported(saved):
    model, folder = saved
    assert coop_hf.PROMPT_MODELS["cocoop"] is CoCoOpModel
    for auto_class in (AutoModel, AutoModelForImageClassification):
        loaded = auto_class.from_pretrained(folder)
        assert type(loaded) is CoCoOpModel
        for key, tensor in model.prompt_state_dict().items():
            torch.testing.assert_close(loaded.prompt_state_dict()[key], tensor, rtol=0, atol=0)


def test_set_classnames_moves_the_prompt_to_new_classes(saved, clip_tokenizer):
    model, folder = saved
    moved = CoCoOpModel.from_pretrained(folder)
    new_classes = ["orchid", "golden retriever", "red rose", "tulip"]
    moved.set_classnames(new_classes)
    fresh = CoCoOpModel.from_clip(moved.clip, new_classes, tokenizer=clip_tokenizer)
    fresh.load_prompt(model.prompt_state_dict())
    image_embeds = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = moved(image_embeds=image_embeds).logits
        torch.testing.assert_close(logits, fresh(image_embeds=image_embeds).logits, rtol=0, atol=0)
    assert logits.shape == (2, 4) and moved.config.id2label[2] == "red rose"


def test_serves_in_the_image_classification_pipeline_from_the_saved_folder(saved):
    _, folder = saved
    classifier = pipeline("image-classification", model=str(folder))
    image = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype("uint8"))
    predictions = classifier(image, top_k=3)
    assert sorted(prediction["label"] for prediction in predictions) == ["cat", "dog", "sunflower"]
    assert sum(prediction["score"] for prediction in predictions) == pytest.approx(1.0, abs=fp32_tolerance(1))


# -- training recipe and the command line --------------------------------------------------------------------------


def test_recipe_fills_only_the_arguments_left_at_their_defaults(tmp_path):
    method = PROMPT_METHODS["cocoop"]
    assert method.recipe().training == {"per_device_train_batch_size": 1, "num_train_epochs": 10}
    default = CoOpTrainingArguments(output_dir=str(tmp_path))
    assert method.training_arguments(default).per_device_train_batch_size == 1
    given = CoOpTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3)
    assert method.training_arguments(given).per_device_train_batch_size == 8
    assert method.epochs(None, 16, default) == 10 and method.epochs(None, 16, given) == 3
    cached = CoOpTrainingArguments(output_dir=str(tmp_path), cached_views=3)
    assert method.epochs(None, 16, cached) == 4  # ceil(10 / 3)
    assert PROMPT_METHODS["coop"].training_arguments(default).per_device_train_batch_size == 32
    with pytest.raises(ValueError, match="unknown training arguments: \\['batch'\\]"):
        PromptLearning("x", CoCoOpModel, recipes={"few_shot": Recipe(training={"batch": 1})})


@pytest.mark.slow
def test_train_script_runs_cocoop_end_to_end(tiny_clip_dir, tmp_path):
    arguments = [
        "--method", "cocoop", "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers",
        "--data_dir", str(DATA), "--shots", "1", "--max_steps", "3", "--output_dir", str(tmp_path),
        "--disable_tqdm", "true", "--learning_rate", "0.05",
    ]  # fmt: skip
    results = load_example("train").main(arguments)
    assert results["method"] == "cocoop" and results["n_ctx"] == 4 and results["ctx_init"] == "a photo of a"
    assert results["epochs"] == 1 and json.loads((tmp_path / "results.json").read_text())["method"] == "cocoop"
    training = json.loads((tmp_path / "run_config.json").read_text())["training"]
    assert training["batch_size"] == 1 and training["epochs"] == 1 and training["max_steps"] == 3
    state = json.loads((tmp_path / "seed1" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    model = CoCoOpModel.from_pretrained(tmp_path / "seed1")
    torch.manual_seed(1)  # the seed's initialisation (seed 1: `set_seed(1)`, then the model is built)
    initial = CoCoOpModel.from_clip(str(tiny_clip_dir), model.classnames)
    for key, tensor in initial.prompt_state_dict().items():
        assert not torch.equal(model.prompt_state_dict()[key], tensor), f"{key} did not train"
    # The saved prompt reproduces the logged test accuracy.
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    test = backbone.features(load_benchmark("oxford_flowers", DATA)["test"], batch_size=100)
    with torch.no_grad():
        predictions = model(image_embeds=test["image_embeds"]).logits.argmax(-1)
    accuracy = 100.0 * int((predictions == test["labels"]).sum()) / len(predictions)
    assert accuracy == pytest.approx(results["per_seed"][0]["accuracy"], abs=1e-9)

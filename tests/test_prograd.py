"""ProGrad: the context initialisation, the zero-shot teacher and the projected update, each equal to the reference
code's (computed here by hand in plain torch); only the context is saved."""

import json
from types import SimpleNamespace

import datasets
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, TrainerCallback

from coop_hf import CoOpModel, ProGradConfig, ProGradModel
from coop_hf.gradient_flow import step_records
from coop_hf.methods.prograd import PROGRAD_TEMPLATES
from coop_hf.methods.prograd.trainer import ProGradTrainer, prograd_projection
from coop_hf.text_encoding import encode_plain
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, load_example, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "sunflower"]
PHOTO = "a photo of a {}."
FLOWER = "a type of flower, a photo of a {}."

# The reference's CUSTOM_TEMPLATES (BeierZhu/Prompt-align@1b76203, ProGrad.public/trainers/prograd.py:201-217) by
# coop-hf benchmark name.
REFERENCE_TEMPLATES = {
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a type of food, a photo of {}.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_v2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


def reference_prompts(template: str, n_ctx: int, classnames: list[str]) -> list[str]:
    """The reference's prompt texts with CTX_INIT: "X ... X <phrase> <class>."."""
    phrase = template.replace(" {}.", "")
    prefix = " ".join(["X"] * (n_ctx - len(phrase.split(" "))))
    return [f"{prefix} {phrase} {name}." for name in classnames]


def reference_text_features(clip, tokenizer, ctx, prompts):
    """[prefix, ctx, suffix] token embeddings of 77-token prompts through the text encoder, at the EOT token."""
    ids = torch.tensor(tokenizer(prompts, padding="max_length", max_length=77)["input_ids"])
    embeds = clip.text_model.embeddings.token_embedding(ids)
    n_ctx = ctx.shape[0]
    embeds = torch.cat([embeds[:, :1], ctx.expand(len(prompts), -1, -1), embeds[:, 1 + n_ctx :]], dim=1)
    return encode_plain(clip, embeds, ids.argmax(dim=-1))


def teacher_features(clip, tokenizer, template, classnames):
    inputs = tokenizer([template.format(name) for name in classnames], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = clip.get_text_features(**inputs).pooler_output
    return features / features.norm(dim=-1, keepdim=True)


def reference_step(
    clip, tokenizer, state, image_embeds, labels, *, template, lr, strength, temperature, weight_decay=5e-4
):
    """One reference update (prograd.py forward_backward + DP prograd_backward_and_update + SGD), by hand."""
    ctx, momentum_buffer = state
    n_ctx = ctx.shape[0]
    leaf = ctx.clone().requires_grad_()
    text = reference_text_features(clip, tokenizer, leaf, reference_prompts(template, n_ctx, CLASSNAMES))
    text = text / text.norm(dim=-1, keepdim=True)
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    scale = clip.logit_scale.exp()
    logits = scale * image @ text.t()
    teacher = scale * image @ teacher_features(clip, tokenizer, template, CLASSNAMES).t()
    xe = F.cross_entropy(logits, labels)
    kl = (-F.softmax(teacher / temperature, -1) * F.log_softmax(logits / temperature, -1)).sum(1).mean()
    kl = kl * temperature * temperature
    (b_grad,) = torch.autograd.grad(kl, leaf, retain_graph=True)
    (a_grad,) = torch.autograd.grad(xe, leaf)
    b_hat, a_hat = b_grad / torch.linalg.norm(b_grad), a_grad / torch.linalg.norm(a_grad)
    conflict = bool(torch.dot(a_hat.flatten(), b_hat.flatten()) < 0)
    grad = a_grad - strength * torch.dot(a_grad.flatten(), b_hat.flatten()) * b_hat if conflict else a_grad
    d_p = grad + weight_decay * ctx  # SGD weight decay (the reference's 5e-4), then momentum 0.9 (dampening 0)
    momentum_buffer = d_p if momentum_buffer is None else 0.9 * momentum_buffer + d_p
    return (ctx - lr * momentum_buffer, momentum_buffer), conflict


class RecordContext(TrainerCallback):
    def __init__(self):
        self.contexts = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.contexts.append(model.prompt_learner.ctx.detach().clone())


def embeds_dataset(image_embeds, labels):
    return datasets.Dataset.from_dict({"image_embeds": image_embeds.numpy(), "labels": labels.numpy()}).with_format(
        "torch"
    )


def train_two_steps(model, image_embeds, labels, output_dir, dataset=None, **overrides):
    """Two Trainer steps on one full batch per epoch: warm-up lr 0.05, then lr 0.1 (cosine factor 1)."""
    args = dict(
        output_dir=str(output_dir), per_device_train_batch_size=len(labels), num_train_epochs=2, learning_rate=0.1,
        warmup_lr=0.05, logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=True, save_strategy="epoch",
    )  # fmt: skip
    recorder = RecordContext()
    trainer = ProGradTrainer(
        model=model,
        args=CoOpTrainingArguments(**(args | overrides)),
        train_dataset=dataset if dataset is not None else embeds_dataset(image_embeds, labels),
        callbacks=[recorder],
    )
    trainer.train()
    return trainer, recorder.contexts


def conflicting_batch(clip, tokenizer, ctx, template, size, dim, temperature=1.0):
    """The first seeded batch (image features, labels) whose cross-entropy and distillation gradients conflict at
    `ctx`, so that the projection is exercised."""
    for seed in range(100):
        generator = torch.Generator().manual_seed(seed)
        image_embeds = torch.randn(size, dim, generator=generator)
        labels = torch.randint(0, len(CLASSNAMES), (size,), generator=generator)
        _, conflict = reference_step(
            clip, tokenizer, (ctx, None), image_embeds, labels, template=template, lr=0.0, strength=1.0,
            temperature=temperature,
        )  # fmt: skip
        if conflict:
            return image_embeds, labels
    raise AssertionError("no seeded batch with conflicting gradients")


# -- settings -------------------------------------------------------------------------------------------------------


def test_defaults_are_the_reference_recipe():
    config = ProGradConfig(classnames=CLASSNAMES)
    assert config.model_type == "prograd"
    assert (config.n_ctx, config.prograd_lambda, config.prograd_temperature) == (16, 1.0, 1.0)
    assert (config.template, config.ctx_init) == (PHOTO, "a photo of a")  # the template's phrase
    assert ProGradConfig.prompt_settings() == (
        "n_ctx", "ctx_init", "class_token_position", "class_specific_context", "ctx_init_from_template",
        "prograd_lambda", "prograd_temperature", "template",
    )  # fmt: skip


def test_template_table_is_the_reference_table():
    assert {name: ProGradConfig.dataset_settings(name)["template"] for name in REFERENCE_TEMPLATES} == (
        REFERENCE_TEMPLATES
    )
    assert PROGRAD_TEMPLATES == REFERENCE_TEMPLATES
    assert ProGradConfig.dataset_settings("some/hub-dataset") == {"template": PHOTO}


def test_settings_errors_name_the_flag(tiny_clip, clip_tokenizer):
    with pytest.raises(ValueError, match="--n_ctx"):
        ProGradConfig(classnames=CLASSNAMES, template=FLOWER, n_ctx=4)
    with pytest.raises(ValueError, match="--template"):
        ProGradConfig(classnames=CLASSNAMES, template="{} texture.")
    with pytest.raises(ValueError, match="--prograd_lambda"):
        ProGradConfig(classnames=CLASSNAMES, prograd_lambda=-1.0)
    with pytest.raises(ValueError, match="--prograd_temperature"):
        ProGradConfig(classnames=CLASSNAMES, prograd_temperature=0.0)
    with pytest.raises(ValueError, match="--class_token_position end"):
        ProGradModel.build_config(tiny_clip, CLASSNAMES, clip_tokenizer, template=FLOWER, class_token_position="front")


# -- initialisation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template, words", [(PHOTO, 4), (FLOWER, 8), (PROGRAD_TEMPLATES["ucf101"], 6)])
def test_context_starts_as_zeros_then_the_phrase_and_the_prompt_reads_as_the_reference(
    tiny_clip, clip_tokenizer, template, words
):
    model = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=template)
    ctx = model.prompt_learner.ctx.detach()
    assert ctx.shape == (16, 32) and not ctx[: 16 - words].any()
    input_ids = model.prompt_learner.input_ids
    reference_ids = clip_tokenizer(reference_prompts(template, 16, CLASSNAMES), padding="max_length", max_length=77)
    reference_ids = torch.tensor(reference_ids["input_ids"])
    assert torch.equal(input_ids, reference_ids[:, : input_ids.shape[1]])
    # The reference writes the embeddings of the phrase's first word-count tokens into the last context slots.
    token_embedding = tiny_clip.text_model.embeddings.token_embedding
    torch.testing.assert_close(ctx[16 - words :], token_embedding(reference_ids[0, 17 - words : 17]), rtol=0, atol=0)


def test_features_equal_the_reference_prompt_encoding(tiny_clip, clip_tokenizer):
    model = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.05 * torch.randn(16, 32, generator=torch.Generator().manual_seed(0)))
        reference = reference_text_features(
            tiny_clip, clip_tokenizer, model.prompt_learner.ctx, reference_prompts(FLOWER, 16, CLASSNAMES)
        )
        assert_close_fp32(model.get_text_features(), reference, depth=stages(2))
        image_embeds = torch.randn(3, 16)
        output = model(image_embeds=image_embeds)
        assert model.distillation_loss(output.logits, output.image_embeds) > 0  # student != teacher at init
    teacher = teacher_features(tiny_clip, clip_tokenizer, FLOWER, CLASSNAMES)
    assert_close_fp32(model.zero_shot_text_embeds, teacher, depth=stages(2))


def test_random_and_class_specific_contexts(tiny_clip, clip_tokenizer):
    torch.manual_seed(0)
    unified = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init_from_template=False)
    assert unified.config.ctx_init is None and 0.015 < unified.prompt_learner.ctx.std() < 0.025
    same = CoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    assert torch.equal(unified.prompt_learner.input_ids, same.prompt_learner.input_ids)
    empty = ProGradConfig(classnames=CLASSNAMES, ctx_init="")  # --ctx_init '' : random, and stays so when reloaded
    assert empty.ctx_init is None and ProGradConfig.from_dict(empty.to_dict()).ctx_init is None
    per_class = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, class_specific_context=True)
    assert per_class.prompt_learner.ctx.shape == (len(CLASSNAMES), 16, 32)
    middle = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, class_token_position="middle")
    assert middle(image_embeds=torch.randn(2, 16)).logits.shape == (2, len(CLASSNAMES))


# -- the losses and the projection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_loss_is_the_reference_formula_with_its_gradient(tiny_clip, clip_tokenizer, temperature):
    model = ProGradModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER, prograd_temperature=temperature
    )
    image_embeds = torch.randn(5, 16)
    logits = torch.randn(5, len(CLASSNAMES), requires_grad=True)
    loss = model.distillation_loss(logits, image_embeds)
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    teacher = tiny_clip.logit_scale.exp() * image @ teacher_features(tiny_clip, clip_tokenizer, FLOWER, CLASSNAMES).t()
    tea_prob = F.softmax(teacher / temperature, dim=-1)
    expected = (-tea_prob * F.log_softmax(logits / temperature, -1) * temperature * temperature).sum(1).mean()
    assert_close_fp32(loss, expected, depth=stages(0))  # the loss head alone
    (grad,) = torch.autograd.grad(loss, logits)
    expected_grad = temperature * (F.softmax(logits / temperature, -1) - tea_prob) / 5
    assert_close_fp32(grad, expected_grad, depth=stages(0, backward=True))


def test_projection_removes_only_a_conflicting_component():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(4, 8, generator=generator)
    direction = reference / reference.norm()
    agreeing = torch.randn(4, 8, generator=generator).abs() * reference.sign()
    assert torch.equal(prograd_projection(agreeing, reference), agreeing)
    conflicting = agreeing - 3 * (agreeing * direction).sum() * direction
    assert (conflicting * reference).sum() < 0
    projected = prograd_projection(conflicting, reference, 1.0)
    # Orthogonal up to the rounding of a dot product, which is relative to |projected| |reference| (Cauchy-Schwarz).
    assert abs(float((projected * reference).sum())) <= fp32_tolerance(1) * projected.norm() * reference.norm()
    half = prograd_projection(conflicting, reference, 0.5)
    assert_close_fp32(half, conflicting - 0.5 * (conflicting * direction).sum() * direction, depth=1)
    assert torch.equal(prograd_projection(conflicting, reference, 0.0), conflicting)


def test_a_zero_gradient_leaves_the_other_unchanged_as_in_the_reference():
    grad = torch.randn(4, 8)
    assert torch.equal(prograd_projection(grad, torch.zeros(4, 8)), grad)
    assert torch.equal(prograd_projection(torch.zeros(4, 8), grad), torch.zeros(4, 8))
    # The reference divides by the zero norm: its cosine is NaN, `NaN < 0` is False, the gradient stays as it is.
    nan_cosine = torch.dot((grad / grad.norm()).flatten(), (torch.zeros(4, 8) / torch.tensor(0.0)).flatten())
    assert nan_cosine.isnan() and not bool(nan_cosine < 0)


# -- the Trainer step -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strength, temperature, weight_decay",
    [
        pytest.param(1.0, 1.0, 5e-4, id="1.0-1.0"),
        pytest.param(0.5, 2.0, 5e-4, id="0.5-2.0"),
        pytest.param(0.0, 1.0, 5e-4, id="0.0-1.0"),
        # The reference's weight decay moves the context by ~1e-5 of its size over the two steps, as little as float32
        # rounding does: a hundredfold decay makes the term visible, so that an update without it fails.
        pytest.param(1.0, 1.0, 0.05, id="1.0-1.0-weight_decay_0.05"),
    ],
)
def test_trainer_steps_equal_the_reference_update(
    tiny_clip, clip_tokenizer, tmp_path, strength, temperature, weight_decay
):
    model = ProGradModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER, prograd_lambda=strength,
        prograd_temperature=temperature,
    )  # fmt: skip
    state = (model.prompt_learner.ctx.detach().clone(), None)
    image_embeds, labels = conflicting_batch(tiny_clip, clip_tokenizer, state[0], FLOWER, 6, 16, temperature)
    trainer, contexts = train_two_steps(model, image_embeds, labels, tmp_path, weight_decay=weight_decay)
    assert len(contexts) == 2
    for step, (lr, ctx_after) in enumerate(zip([0.05, 0.1], contexts, strict=True)):
        state, conflict = reference_step(
            tiny_clip, clip_tokenizer, state, image_embeds, labels, template=FLOWER, lr=lr, strength=strength,
            temperature=temperature, weight_decay=weight_decay,
        )  # fmt: skip
        assert conflict or step == 1  # the first step projects
        # The context's zero-initialised slots hold nothing but the updates: values up to ~0.4 after the two steps,
        # from gradients up to ~2.7, whose float32 rounding (forward and backward through the two-layer text tower,
        # once per step, carried into the next) reaches ~20 ulps of 0.4, i.e. 1e-6, on some CPUs.
        assert_close_fp32(ctx_after, state[0], depth=stages(2, backward=True, steps=step + 1))
    assert all("kl_loss" in entry for entry in trainer.state.log_history if "loss" in entry)
    checkpoint = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert list(checkpoint) == ["prompt_learner.ctx"]
    torch.testing.assert_close(checkpoint["prompt_learner.ctx"], contexts[1], rtol=0, atol=0)


def test_vit_b32_trainer_step_equals_the_reference_update(vit_b32_clip, clip_tokenizer, tmp_path):
    model = ProGradModel.from_clip(vit_b32_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=PHOTO)
    state = (model.prompt_learner.ctx.detach().clone(), None)
    image_embeds, labels = conflicting_batch(vit_b32_clip, clip_tokenizer, state[0], PHOTO, 4, 512)
    _, contexts = train_two_steps(model, image_embeds, labels, tmp_path, num_train_epochs=1, save_strategy="no")
    state, conflict = reference_step(
        vit_b32_clip, clip_tokenizer, state, image_embeds, labels, template=PHOTO, lr=0.05, strength=1.0,
        temperature=1.0,
    )  # fmt: skip
    assert conflict
    assert_close_fp32(contexts[0], state[0], depth=stages(12, backward=True))


def test_trainer_refuses_what_would_change_the_update(tiny_clip, clip_tokenizer, tmp_path):
    model = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    image_embeds, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="--gradient_accumulation_steps"):
        train_two_steps(model, image_embeds, labels, tmp_path, gradient_accumulation_steps=2)
    coop = CoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    with pytest.raises(TypeError, match="ProGradModel"):
        train_two_steps(coop, image_embeds, labels, tmp_path)


# -- saving, loading, class lists -----------------------------------------------------------------------------------


def test_round_trip_saves_only_the_context_and_rebuilds_the_teacher(tiny_clip_dir, tmp_path):
    model = ProGradModel.from_clip(str(tiny_clip_dir), CLASSNAMES, template=FLOWER, prograd_lambda=0.8)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(2))
    assert [key for key in model.state_dict() if not key.startswith("clip.")] == ["prompt_learner.ctx"]
    model.save_pretrained(tmp_path)
    assert list(load_file(tmp_path / "model.safetensors")) == ["prompt_learner.ctx"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["model_type"], saved["template"], saved["prograd_lambda"]) == ("prograd", FLOWER, 0.8)
    assert saved["ctx_init"] == "a type of flower, a photo of a"
    image_embeds = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    for reloaded in (ProGradModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(reloaded) is ProGradModel
        assert torch.equal(reloaded.prompt_learner.input_ids, model.prompt_learner.input_ids)
        torch.testing.assert_close(reloaded.zero_shot_text_embeds, model.zero_shot_text_embeds, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(
                reloaded(image_embeds=image_embeds).logits, model(image_embeds=image_embeds).logits, rtol=0, atol=0
            )


def test_set_classnames_moves_the_prompts_and_the_teacher(tiny_clip, clip_tokenizer):
    model = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)
    new = ["rose", "daisy"]
    model.set_classnames(new)
    fresh = ProGradModel.from_clip(tiny_clip, new, tokenizer=clip_tokenizer, template=FLOWER)
    assert torch.equal(model.prompt_learner.input_ids, fresh.prompt_learner.input_ids)
    torch.testing.assert_close(model.zero_shot_text_embeds, fresh.zero_shot_text_embeds, rtol=0, atol=0)
    output = model(image_embeds=torch.randn(2, 16))
    assert model.distillation_loss(output.logits, output.image_embeds).isfinite()


def test_model_card_lists_the_method_and_its_settings(tiny_clip, clip_tokenizer):
    model = ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)
    info = model.card_info()
    assert info.method_name == "ProGrad" and info.paper[1] == "https://arxiv.org/abs/2205.14865"
    rows = dict(info.settings)
    assert rows["gradient projection strength λ (`prograd_lambda`)"] == "1"
    assert rows["zero-shot teacher prompt (`template`)"] == f'"{FLOWER}"'


# -- the command line -----------------------------------------------------------------------------------------------


def test_runner_defaults_the_template_to_the_datasets(tiny_clip, clip_tokenizer):
    from coop_hf.runners.methods import PROMPT_METHODS

    backbone = SimpleNamespace(clip=tiny_clip, tokenizer=clip_tokenizer)
    experiment = SimpleNamespace(backbone=backbone, classnames=CLASSNAMES, dataset="oxford_flowers")
    fields = PROMPT_METHODS["prograd"].prompt_fields(experiment, {})
    assert (fields["template"], fields["ctx_init"]) == (FLOWER, "a type of flower, a photo of a")


def test_train_script_runs_prograd_and_records_its_settings(tiny_clip_dir, tmp_path):
    results = load_example("train").main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "prograd", "--shots", "1", "--max_steps", "2", "--output_dir", str(tmp_path),
        "--disable_tqdm", "true", "--report_to", "none", "--template", FLOWER, "--logging_steps", "1",
    ])  # fmt: skip
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert recorded["method"] == results["method"] == "prograd"
    assert (recorded["prograd_lambda"], recorded["prograd_temperature"], recorded["template"]) == (1.0, 1.0, FLOWER)
    assert (recorded["n_ctx"], recorded["ctx_init"]) == (16, "a type of flower, a photo of a")
    assert 0 <= recorded["accuracy"] <= 100
    state = json.loads((tmp_path / "seed1" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and any("kl_loss" in entry for entry in state["log_history"])


def test_gradient_flow_leaves_the_prograd_update_unchanged(tiny_clip, clip_tokenizer, tmp_path):
    """ProGrad's own step (`optimization_step`) gets the batch without its clean labels, and recording the flow
    changes no update."""

    def build():
        return ProGradModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)

    model = build()
    image_embeds, labels = conflicting_batch(
        tiny_clip, clip_tokenizer, model.prompt_learner.ctx.detach().clone(), FLOWER, 6, 16
    )
    _, plain = train_two_steps(model, image_embeds, labels, tmp_path / "plain")
    clean_labels = labels.clone()
    clean_labels[:2] = (labels[:2] + 1) % len(CLASSNAMES)  # two noisy samples
    with_clean = datasets.Dataset.from_dict(
        {"image_embeds": image_embeds.numpy(), "labels": labels.numpy(), "clean_labels": clean_labels.numpy()}
    ).with_format("torch")
    trainer, traced = train_two_steps(
        build(), image_embeds, labels, tmp_path / "traced", dataset=with_clean, gradient_flow=True
    )
    for ctx_plain, ctx_traced in zip(plain, traced, strict=True):
        torch.testing.assert_close(ctx_traced, ctx_plain, rtol=0, atol=0)
    records = step_records(trainer.state.log_history)
    assert [(record["clean_samples"], record["noisy_samples"]) for record in records] == [(4, 2), (4, 2)]

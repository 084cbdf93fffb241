"""Every backbone family (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) under the prompt methods, against plain reference
computations written here from the transformers models' own modules."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_clip, tiny_clip_config
from tiny_backbones import CAUSAL, CLASSNAMES, FAMILIES, tiny_backbone
from tolerances import assert_close_fp32, stages
from transformers.models.siglip2.image_processing_pil_siglip2 import convert_image_to_patches

from coop_hf import (
    ClassTokenTuningModel,
    CoCoOpModel,
    CoOpModel,
    KgCoOpModel,
    LinearClassifierModel,
    ProGradModel,
    TextEncoderFineTuningModel,
)
from coop_hf.backbones import backbone_for, load_backbone
from coop_hf.baselines import zero_shot_weights
from coop_hf.text_encoding import encode_plain, encode_shared_prefix, shared_prefix_length

PHRASE = "a photo of a"
IMAGE_SIZE = {"clip": 224, "metaclip_2": 64, "siglip": 64, "siglip2": 64}


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    family = request.param
    clip = random_clip(tiny_clip_config()) if family == "clip" else None
    model, tokenizer = tiny_backbone(family, clip)
    return family, model, tokenizer


def pixels(family: str, count: int = 3, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, IMAGE_SIZE[family], IMAGE_SIZE[family], generator=generator)


# -- the plain reference ----------------------------------------------------------------------------------------


def reference_tokens(family, tokenizer, model, texts):
    """Token ids as each family's model card says to tokenize, and the position its text model pools."""
    if family.startswith("siglip"):  # with the tokenizer's attention mask, as the zero-shot pipeline feeds it
        max_length = model.config.text_config.max_position_embeddings
        inputs = tokenizer(texts, padding="max_length", max_length=max_length, return_tensors="pt")
        return dict(inputs), torch.full((len(texts),), max_length - 1)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    ids = inputs["input_ids"]
    pool = ids.argmax(-1) if family == "clip" else (ids == tokenizer.eos_token_id).int().argmax(-1)
    return dict(inputs), pool


def reference_text_features(family, model, embeds, pool, attention_mask=None):
    """The text tower on token embeddings [prompts, length, width], every position through every layer; a
    bidirectional tower attends only the positions `attention_mask` marks 1."""
    text = model.text_model
    hidden = text.embeddings(inputs_embeds=embeds)
    mask = None
    if CAUSAL[family]:
        length = embeds.shape[1]
        mask = torch.full((length, length), float("-inf")).triu(1)[None, None].to(hidden.dtype)
    elif attention_mask is not None:
        mask = torch.zeros(attention_mask.shape, dtype=hidden.dtype).masked_fill(attention_mask == 0, float("-inf"))
        mask = mask[:, None, None, :]
    for layer in text.encoder.layers:
        hidden = layer(hidden, mask)
    pooled = text.final_layer_norm(hidden[torch.arange(len(hidden)), pool])
    return text.head(pooled) if family.startswith("siglip") else model.text_projection(pooled)


def reference_logits(family, model, image_embeds, text_embeds):
    cosine = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).t()
    logits = model.logit_scale.exp() * cosine
    return logits + model.logit_bias if family.startswith("siglip") else logits


def reference_image_features(family, model, pixel_values):
    if family != "siglip2":
        return model.get_image_features(pixel_values=pixel_values).pooler_output
    patch = model.config.vision_config.patch_size
    patches = torch.stack([torch.from_numpy(convert_image_to_patches(image.numpy(), patch)) for image in pixel_values])
    rows = pixel_values.shape[-1] // patch
    return model.get_image_features(
        pixel_values=patches,
        pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.int32),
        spatial_shapes=torch.tensor([[rows, rows]] * len(patches)),
    ).pooler_output


def reference_prompt_embeds(family, model, tokenizer, ctx, classnames, n_ctx):
    """Prompts "X ... X <class>." tokenized by hand, the context vectors written over the placeholders."""
    texts = [" ".join(["X"] * n_ctx) + f" {name}." for name in classnames]
    inputs, pool = reference_tokens(family, tokenizer, model, texts)
    ids = inputs["input_ids"]
    embeds = model.text_model.embeddings.token_embedding(ids)
    # The placeholders where the tokenizer put them: after its start token, after SigLIP 2's left padding.
    placeholder = tokenizer(" ".join(["X"] * 2), add_special_tokens=False)["input_ids"][0]
    context = ctx.expand(len(classnames), -1, -1) if ctx.dim() == 2 else ctx
    rows = []
    for row in range(len(ids)):
        start = int((ids[row] == placeholder).nonzero()[0])
        rows.append(torch.cat([embeds[row, :start], context[row], embeds[row, start + n_ctx :]]))
    return torch.stack(rows), pool, inputs.get("attention_mask")


# -- the backbone layer -----------------------------------------------------------------------------------------


def test_backbone_declares_its_layout(family_model):
    family, model, _ = family_model
    backbone = backbone_for(model)
    assert backbone.family == family
    assert backbone.causal_text is CAUSAL[family]
    assert (backbone.logit_bias is not None) is family.startswith("siglip")
    assert backbone_for(backbone) is backbone


def test_image_features_are_the_models_own(family_model):
    family, model, _ = family_model
    images = pixels(family)
    with torch.no_grad():
        assert_close_fp32(
            backbone_for(model).image_features(images),
            reference_image_features(family, model, images),
            depth=stages(2),
        )


def test_vision_layer_hook_sees_and_replaces_every_layer(family_model):
    family, model, _ = family_model
    backbone, images = backbone_for(model), pixels(family, count=2)
    seen = []

    def hook(index, hidden):
        seen.append(index)
        return hidden

    with torch.no_grad():
        plain = backbone.image_features(images)
        torch.testing.assert_close(backbone.image_features(images, layer_hook=hook), plain)
        assert seen == list(range(len(backbone.vision_layers)))
        changed = backbone.image_features(images, layer_hook=lambda index, hidden: hidden * (1 + (index == 1)))
    assert not torch.allclose(changed, plain)
    torch.testing.assert_close(backbone.image_features(images), plain)  # the hooks are gone


def test_text_layer_hook_runs_before_each_layer(family_model):
    family, model, tokenizer = family_model
    coop = CoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, n_ctx=4)
    learner = coop.prompt_learner
    embeds = learner(coop.backbone.token_embedding)
    seen = []
    with torch.no_grad():
        hooked = encode_plain(
            model, embeds, learner.eot_positions, layer_hook=lambda i, h: seen.append(i) or h,
            attention_mask=learner.attention_mask,
        )  # fmt: skip
        assert_close_fp32(hooked, coop.get_text_features(), depth=stages(2))
    assert seen == [0, 1] * len(learner.eot_positions.unique())


def test_unsupported_model_is_refused_by_name():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32))
    with pytest.raises(ValueError, match="model_type 'bert' is not a supported backbone.*--model_name_or_path"):
        CoOpModel.from_clip(bert, CLASSNAMES, tokenizer=object())
    with pytest.raises(ValueError, match="'bert' is not a supported backbone"):
        load_backbone(bert)


# -- CoOp -------------------------------------------------------------------------------------------------------


def test_untrained_coop_is_the_backbones_zero_shot(family_model):
    """Context initialised from a phrase: the prompt is the hand-written "a photo of a <class>." exactly."""
    family, model, tokenizer = family_model
    coop = CoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, ctx_init=PHRASE)
    images = pixels(family)
    inputs, _ = reference_tokens(family, tokenizer, model, [f"{PHRASE} {name}." for name in CLASSNAMES])
    with torch.no_grad():
        text = model.get_text_features(**inputs).pooler_output
        expected = reference_logits(family, model, reference_image_features(family, model, images), text)
        assert_close_fp32(coop(pixel_values=images).logits, expected, depth=stages(2))
        weights = zero_shot_weights(model, tokenizer, CLASSNAMES, ["a photo of a {}."])
        assert_close_fp32(weights, F.normalize(text, dim=-1), depth=stages(2))


@pytest.mark.parametrize("position", ["end", "front"])
def test_coop_logits_and_context_gradient_match_the_reference(family_model, position):
    family, model, tokenizer = family_model
    classnames = CLASSNAMES[:1] if position == "front" else CLASSNAMES
    if family == "siglip2" and position == "front":  # Gemma's BPE merges the name with the period: "daisy."
        with pytest.raises(ValueError, match="tokenizes differently inside the prompt"):
            CoOpModel.from_clip(model, classnames, tokenizer=tokenizer, n_ctx=3, class_token_position=position)
        return
    torch.manual_seed(0)
    coop = CoOpModel.from_clip(model, classnames, tokenizer=tokenizer, n_ctx=3, class_token_position=position)
    images, labels = pixels(family), torch.tensor([0, 0, 0])
    output = coop(pixel_values=images, labels=labels)
    output.loss.backward()

    ctx = coop.prompt_learner.ctx.detach().clone().requires_grad_(True)
    if position == "front":  # one class, its name before the context
        texts = [f"{classnames[0]} X X X."]
        inputs, pool = reference_tokens(family, tokenizer, model, texts)
        embeds = model.text_model.embeddings.token_embedding(inputs["input_ids"])
        start = (0 if family == "siglip" else 1) + 1  # after the one-token class name
        embeds = torch.cat([embeds[:, :start], ctx[None], embeds[:, start + 3 :]], dim=1)
        mask = inputs.get("attention_mask")
    else:
        embeds, pool, mask = reference_prompt_embeds(family, model, tokenizer, ctx, classnames, n_ctx=3)
    text = reference_text_features(family, model, embeds, pool, mask)
    expected = reference_logits(family, model, reference_image_features(family, model, images), text)
    F.cross_entropy(expected, labels).backward()
    assert_close_fp32(output.logits, expected, depth=stages(2))
    assert_close_fp32(coop.prompt_learner.ctx.grad, ctx.grad, depth=stages(2, backward=True))


def test_shared_prefix_is_used_exactly_where_the_text_tower_is_causal(family_model, monkeypatch):
    import coop_hf.text_encoding as text_encoding

    family, model, tokenizer = family_model
    coop = CoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, n_ctx=4)
    calls = []
    original = text_encoding.encode_shared_prefix
    monkeypatch.setattr(text_encoding, "encode_shared_prefix", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        fast = coop.get_text_features()
        learner = coop.prompt_learner
        plain = encode_plain(
            model, learner(coop.backbone.token_embedding), learner.eot_positions, attention_mask=learner.attention_mask
        )
    assert bool(calls) is CAUSAL[family]
    assert_close_fp32(fast, plain, depth=stages(2))
    if not CAUSAL[family]:
        prefix = shared_prefix_length(
            learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=False
        )
        with pytest.raises(ValueError, match="bidirectional"):
            encode_shared_prefix(model, learner(coop.backbone.token_embedding), learner.eot_positions, prefix)


def test_prompt_layout_follows_the_family(family_model):
    family, model, tokenizer = family_model
    learner = CoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, n_ctx=2).prompt_learner
    start = 0 if family.startswith("siglip") else 1  # after CLIP's [SOS] and MetaCLIP 2's <s>
    if family == "siglip2":  # after the padding: its tokenizer pads on the left
        start = int(learner.attention_mask[0].argmax())
        assert start > 0 and not learner.attention_mask[0, :start].any()
    assert learner.context_positions[0].tolist() == [start, start + 1]
    if family.startswith("siglip"):  # padded to the full length, pooled at the last position
        length = model.config.text_config.max_position_embeddings
        assert learner.input_ids.shape[1] == length
        assert learner.eot_positions.tolist() == [length - 1] * len(CLASSNAMES)
    else:  # cut after the longest prompt's end-of-text token, pooled there
        eos = tokenizer.eos_token_id
        assert learner.input_ids[torch.arange(len(CLASSNAMES)), learner.eot_positions].eq(eos).all()
        assert learner.input_ids.shape[1] == int(learner.eot_positions.max()) + 1


def test_saved_prompt_records_its_family_and_refuses_another(family_model, tmp_path):
    family, model, tokenizer = family_model
    coop = CoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, n_ctx=4)
    coop.save_pretrained(tmp_path)
    loaded = CoOpModel.from_pretrained(tmp_path, clip_model=model, tokenizer=tokenizer)
    assert loaded.config.backbone_family == family
    images = pixels(family)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=images).logits, coop(pixel_values=images).logits)
    other_family = "siglip" if family != "siglip" else "metaclip_2"
    other, other_tokenizer = tiny_backbone(other_family)
    with pytest.raises(ValueError, match=f"learned on a {family} backbone.*--model_name_or_path"):
        CoOpModel.from_pretrained(tmp_path, clip_model=other, tokenizer=other_tokenizer)


# -- the other methods ------------------------------------------------------------------------------------------


def test_cocoop_logits_and_gradients_match_the_reference(family_model):
    family, model, tokenizer = family_model
    torch.manual_seed(0)
    cocoop = CoCoOpModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, ctx_init=PHRASE)
    with torch.no_grad():
        cocoop.prompt_learner.ctx.add_(0.05 * torch.randn_like(cocoop.prompt_learner.ctx))
    images, labels = pixels(family, count=2), torch.tensor([1, 3])
    output = cocoop(pixel_values=images, labels=labels)
    output.loss.backward()

    ctx = cocoop.prompt_learner.ctx.detach().clone().requires_grad_(True)
    image_embeds = reference_image_features(family, model, images)
    shifts = cocoop.meta_net(F.normalize(image_embeds, dim=-1))
    logits = []
    for index in range(len(images)):
        embeds, pool, mask = reference_prompt_embeds(
            family, model, tokenizer, ctx + shifts[index], CLASSNAMES, n_ctx=4
        )
        text = reference_text_features(family, model, embeds, pool, mask)
        logits.append(reference_logits(family, model, image_embeds[index : index + 1], text)[0])
    expected = torch.stack(logits)
    F.cross_entropy(expected, labels).backward()
    assert_close_fp32(output.logits, expected, depth=stages(2))
    assert_close_fp32(cocoop.prompt_learner.ctx.grad, ctx.grad, depth=stages(2, backward=True))


METHODS_AT_ZERO_SHOT = {  # model class and settings whose untrained logits are zero-shot "a photo of a {}."
    "kgcoop": (KgCoOpModel, {"ctx_init": PHRASE, "template": "a photo of a {}."}),
    "cls-tuning": (ClassTokenTuningModel, {"ctx_init": PHRASE, "learn_context": False}),
    "classifier-c": (LinearClassifierModel, {"init": "text", "template": "a photo of a {}."}),
    "tenc-ft": (TextEncoderFineTuningModel, {"template": "a photo of a {}."}),
    "prograd": (ProGradModel, {"template": "a photo of a {}."}),
}


@pytest.mark.parametrize("method", sorted(METHODS_AT_ZERO_SHOT))
def test_every_method_runs_on_every_backbone(family_model, method):
    """Untrained, each method is the backbone's zero-shot classifier where it starts from it; one training step
    gives a finite loss and moves only the method's own tensors."""
    family, model, tokenizer = family_model
    model_class, settings = METHODS_AT_ZERO_SHOT[method]
    prompt = model_class.from_clip(model, CLASSNAMES, tokenizer=tokenizer, **settings)
    images, labels = pixels(family), torch.tensor([0, 1, 2])
    with torch.no_grad():
        weights = zero_shot_weights(model, tokenizer, CLASSNAMES, ["a photo of a {}."])
        zero_shot = reference_logits(family, model, reference_image_features(family, model, images), weights)
        if method != "prograd":  # ProGrad's context starts as zeros + the phrase, not the phrase alone
            assert_close_fp32(prompt(pixel_values=images).logits, zero_shot, depth=stages(2))
        else:
            teacher = prompt.zero_shot_logits(reference_image_features(family, model, images))
            assert_close_fp32(teacher, zero_shot, depth=stages(2))
    frozen = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    loss = prompt(pixel_values=images, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    trained = [name for name, parameter in prompt.named_parameters() if parameter.grad is not None]
    assert trained and not any(name.startswith("clip.") for name in trained)
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in model.state_dict().items())

"""MaPLe against a reference computation written from the official code (muzairkhattak/multimodal-prompt-learning:
trainers/maple.py, clip/model.py's ResidualAttentionBlock_MaPLe and VisionTransformer_MaPLe), with every half cast
removed (the official code trains in fp16 only), on the same random weights."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import DATA, random_clip, tiny_clip_config
from tiny_backbones import tiny_backbone
from transformers import AutoModel

from coop_hf import MaPLeConfig, MaPLeModel
from coop_hf.backbones import backbone_for
from coop_hf.runners import PromptArguments
from coop_hf.text_encoding import encode_plain
from coop_hf.training import CoOpTrainingArguments
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["daisy", "sea lion", "rose", "tulip"]
IMAGE_SIZE = {"clip": 224, "metaclip_2": 64}


def official_text_features(model, learner, prompts, deep_text, n_ctx):
    """trainers/maple.py TextEncoder with ResidualAttentionBlock_MaPLe(text_layer=True): the prompts plus
    positions, then before each layer i >= 1 (while deeper prompts remain) the tokens 1..n_ctx replaced by the next
    deeper prompt; final norm, the end-of-text token, the text projection."""
    text = model.text_model
    x = text.embeddings(inputs_embeds=prompts)
    length = x.shape[1]
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
    counter = 0
    for index, layer in enumerate(text.encoder.layers):
        if index > 0 and counter <= len(deep_text) - 1:
            context = deep_text[counter].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], context, x[:, 1 + n_ctx :]], dim=1)
            counter += 1
        x = layer(x, causal)
    x = text.final_layer_norm(x)
    return model.text_projection(x[torch.arange(len(x)), learner.eot_positions])


def official_image_features(model, pixel_values, shared_ctx, deep_vision, n_ctx):
    """clip/model.py VisionTransformer_MaPLe: patch + class + position embeddings, the shared vision context
    appended, ln_pre, then before each layer i >= 1 (while deeper prompts remain) the last n_ctx tokens replaced by
    the next deeper prompt; ln_post on the class token, the projection."""
    vision = model.vision_model
    x = vision.embeddings(pixel_values)
    x = torch.cat([x, shared_ctx.expand(x.shape[0], -1, -1)], dim=1)
    x = vision.pre_layrnorm(x)
    counter = 0
    for index, layer in enumerate(vision.encoder.layers):
        if index > 0 and counter <= len(deep_vision) - 1:
            x = torch.cat([x[:, : x.shape[1] - n_ctx], deep_vision[counter].expand(x.shape[0], -1, -1)], dim=1)
            counter += 1
        x = layer(x, None)
    return model.visual_projection(vision.post_layernorm(x[:, 0]))


def official_logits(maple, pixel_values):
    """CustomCLIP.forward of trainers/maple.py on copies of MaPLe's trainable tensors (returned for gradients)."""
    model, learner, n_ctx = maple.clip, maple.prompt_learner, maple.config.n_ctx
    ctx = learner.ctx.detach().clone().requires_grad_(True)
    proj = {k: v.detach().clone().requires_grad_(True) for k, v in maple.proj.state_dict().items()}
    deep_text = [p.detach().clone().requires_grad_(True) for p in maple.compound_prompts_text]
    couplings = [
        {k: v.detach().clone().requires_grad_(True) for k, v in layer.state_dict().items()}
        for layer in maple.compound_prompt_projections
    ]
    # MultiModalPromptLearner.forward: [SOS], ctx, the fixed suffix; proj(ctx); each deeper prompt's coupling.
    embeds = model.text_model.embeddings.token_embedding(learner.input_ids)
    prompts = torch.cat([embeds[:, :1], ctx.expand(len(embeds), -1, -1), embeds[:, 1 + n_ctx :]], dim=1)
    shared_ctx = F.linear(ctx, proj["weight"], proj["bias"])
    deep_vision = [F.linear(p, c["weight"], c["bias"]) for p, c in zip(deep_text, couplings, strict=True)]
    text = official_text_features(model, learner, prompts, deep_text, n_ctx)
    image = official_image_features(model, pixel_values, shared_ctx, deep_vision, n_ctx)
    logits = model.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    tensors = {"prompt_learner.ctx": ctx, **{f"proj.{k}": v for k, v in proj.items()}}
    tensors |= {f"compound_prompts_text.{i}": p for i, p in enumerate(deep_text)}
    for i, coupling in enumerate(couplings):
        tensors |= {f"compound_prompt_projections.{i}.{k}": v for k, v in coupling.items()}
    return logits, tensors


def deep_clip(layers: int):
    """A tiny CLIP with `layers` layers in both towers."""
    config = tiny_clip_config(num_hidden_layers=layers)
    config.vision_config.num_hidden_layers = layers
    return random_clip(config)


@pytest.mark.parametrize("depth", [1, 2])
def test_logits_and_every_gradient_match_the_official_computation(clip_like_backbone, depth):
    assert_matches_official(*clip_like_backbone, depth)


def test_layers_past_the_depth_keep_the_last_prompts(clip_tokenizer):
    """Depth 3 of 4 layers: the fourth layer runs on the third layer's prompt tokens, as in the reference."""
    assert_matches_official("clip", deep_clip(4), clip_tokenizer, 3)


def assert_matches_official(family, model, tokenizer, depth):
    torch.manual_seed(0)
    maple = MaPLeModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, prompt_depth=depth)
    with torch.no_grad():  # trained-looking couplings: the clones start equal
        for parameter in maple.compound_prompt_projections.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    assert_step_matches(maple, family, official_logits)


def assert_step_matches(model, family, official_logits):
    """One training step's logits and the gradient of every trainable tensor of `model` equal those of
    `official_logits(model, pixel_values)` (which returns its logits and its copies of the tensors). Returns the
    step's output, its pixels and the copies."""
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3])
    output = model(pixel_values=pixel_values, labels=labels)
    output.loss.backward()
    expected, tensors = official_logits(model, pixel_values)
    F.cross_entropy(expected, labels).backward()
    backbone = backbone_for(model.clip)
    layers = max(len(backbone.text_layers), len(backbone.vision_layers))  # the towers run side by side
    assert_close_fp32(output.logits, expected, depth=stages(layers))
    parameters = dict(model.named_parameters())
    assert sorted(tensors) == sorted(model.prompt_state_dict())
    for name, tensor in tensors.items():
        assert_close_fp32(parameters[name].grad, tensor.grad, depth=stages(layers, backward=True), msg=name)
    return output, pixel_values, tensors


def test_initialisation_follows_the_reference(clip_like_backbone):
    """ "a photo of a", n_ctx 2: "a photo" learned from its token embeddings, "of a" kept as fixed words; the
    deeper couplings start as clones of one layer; an n_ctx longer than the phrase starts from random vectors."""
    _, model, tokenizer = clip_like_backbone
    maple = MaPLeModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, prompt_depth=2)
    assert maple.config.n_ctx == 2 and maple.config.ctx_init == "a photo of a"
    phrase = tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    embedding = model.text_model.embeddings.token_embedding
    torch.testing.assert_close(maple.prompt_learner.ctx, embedding(torch.tensor(phrase[:2])))
    learner = maple.prompt_learner
    assert learner.context_positions[0].tolist() == [1, 2]
    assert learner.input_ids[0, 3:5].tolist() == phrase[2:]  # "of a" stays
    first = maple.compound_prompt_projections[0].weight
    assert all(torch.equal(layer.weight, first) for layer in maple.compound_prompt_projections)
    random = MaPLeModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, n_ctx=5, prompt_depth=2)
    assert random.prompt_learner.context_positions[0].tolist() == [1, 2, 3, 4, 5]
    assert random.prompt_learner.ctx.std() < 0.05


def test_default_depth_on_a_deep_model_and_the_fast_text_path(clip_tokenizer):
    model = deep_clip(9)
    maple = MaPLeModel.from_clip(model, CLASSNAMES, tokenizer=clip_tokenizer)
    assert maple.config.prompt_depth == 9 and len(maple.compound_prompts_text) == 8
    learner = maple.prompt_learner
    deeper = list(maple.compound_prompts_text)

    def replace(index, hidden):
        if not 1 <= index <= len(deeper):
            return hidden
        return torch.cat([hidden[:, :1], deeper[index - 1].expand(len(hidden), -1, -1), hidden[:, 3:]], dim=1)

    with torch.no_grad():
        plain = encode_plain(model, learner(maple.backbone.token_embedding), learner.eot_positions, layer_hook=replace)
        assert_close_fp32(maple.get_text_features(), plain, depth=stages(9))


def test_refused_where_the_layout_differs(clip_tokenizer):
    siglip, tokenizer = tiny_backbone("siglip")
    with pytest.raises(ValueError, match="MaPLe .* SigLIP has no such layout.*--model_name_or_path"):
        MaPLeModel.from_clip(siglip, CLASSNAMES, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"prompt_depth=5 \(--prompt_depth\) exceeds the 2 layers"):
        MaPLeModel.from_clip(random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, prompt_depth=5)
    with pytest.raises(ValueError, match="MaPLe has no class_token_position setting"):
        MaPLeConfig(classnames=CLASSNAMES, class_token_position="front")


def test_saved_as_its_tensors_and_loaded_back(clip_like_backbone, tmp_path):
    family, model, tokenizer = clip_like_backbone
    maple = MaPLeModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, prompt_depth=2)
    maple.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, clip_model=model, tokenizer=tokenizer)
    assert type(loaded) is MaPLeModel and loaded.config.prompt_depth == 2
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, maple(pixel_values=pixel_values).logits)
    with pytest.raises(ValueError, match="changes the image tower"):
        loaded(image_embeds=torch.randn(2, model.config.projection_dim))
    loaded.set_classnames(["tulip", "rose"])  # the language prompts move to new classes
    assert loaded(pixel_values=pixel_values).logits.shape == (2, 2)


def test_reference_recipe():
    from coop_hf.runners.methods import PROMPT_METHODS
    from coop_hf.training import CoOpTrainingArguments

    args = PROMPT_METHODS["maple"].training_arguments(CoOpTrainingArguments("unused"))
    assert (args.learning_rate, args.per_device_train_batch_size) == (0.0035, 4)
    assert PROMPT_METHODS["maple"].epochs(None, 16, args) == 5


@pytest.mark.slow
def test_train_script_runs_maple_on_pixels(tiny_clip_dir, tmp_path):
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--method", "maple", "--prompt_depth", "2"))
    assert results["method"] == "maple" and results["prompt_depth"] == 2 and results["n_ctx"] == 4
    recorded = json.loads((tmp_path / "run_config.json").read_text())
    assert recorded["prompt"]["ctx_init"] == "a photo of a" and recorded["training"]["learning_rate"] == 0.05
    assert 0 <= results["accuracy"] <= 100 and (tmp_path / "seed1" / "model.safetensors").is_file()


def test_transfer_protocols_default_to_the_cross_dataset_depth(tiny_clip_dir, tmp_path):
    """transfer.py trains MaPLe at the reference's cross-dataset depth 3 unless --prompt_depth is given: on a
    two-layer backbone that is refused before anything is written, naming the flag."""
    from coop_hf.runners.transfer import TransferArguments, transfer_study

    arguments = TransferArguments(
        model_name_or_path=str(tiny_clip_dir), dataset="oxford_flowers", targets=["caltech101"], data_dir=str(DATA),
        shots=1, method="maple",
    )  # fmt: skip
    prompt = PromptArguments()
    args = CoOpTrainingArguments(str(tmp_path / "out"), num_train_epochs=1, disable_tqdm=True)
    with pytest.raises(ValueError, match=r"prompt_depth=3 \(--prompt_depth\) exceeds the 2 layers"):
        transfer_study(arguments, prompt, args)
    assert not (tmp_path / "out").exists()

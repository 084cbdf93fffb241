"""IVLP against a reference computation written from the official code (muzairkhattak/PromptSRC and
multimodal-prompt-learning: trainers/independentVL.py, clip/model.py's ResidualAttentionBlock_IVLP and
VisionTransformer with VPT), with every half cast removed, on the same random weights. The prompt replacement of
ResidualAttentionBlock_IVLP is MaPLe's, so the reference towers of `test_maple` serve both."""

import pytest
import torch
from conftest import random_clip, tiny_clip_config
from tiny_backbones import tiny_backbone
from transformers import AutoModel

from coop_hf import IVLPConfig, IVLPModel
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments
from tests.test_maple import (
    CLASSNAMES,
    assert_step_matches,
    deep_clip,
    official_image_features,
    official_text_features,
)
from tests.test_train_e2e import flags, run_in_process


def official_features(ivlp, pixel_values):
    """The image and text encoders of CustomCLIP.forward of trainers/independentVL.py on copies of IVLP's tensors:
    the text prompts ([SOS], ctx, the fixed suffix) with each deeper layer's own prompt, the image tokens with VPT
    appended before ln_pre and each deeper layer's own VPT (none with a vision depth of 0). Returns the normalised
    image and text features and the copies."""
    model, learner, n_ctx = ivlp.clip, ivlp.prompt_learner, ivlp.config.n_ctx
    ctx = learner.ctx.detach().clone().requires_grad_(True)
    deep_text = [p.detach().clone().requires_grad_(True) for p in ivlp.text_prompts]
    vision = [p.detach().clone().requires_grad_(True) for p in ivlp.vision_prompts]
    embeds = model.text_model.embeddings.token_embedding(learner.input_ids)
    prompts = torch.cat([embeds[:, :1], ctx.expand(len(embeds), -1, -1), embeds[:, 1 + n_ctx :]], dim=1)
    text = official_text_features(model, learner, prompts, deep_text, n_ctx)
    if vision:
        image = official_image_features(model, pixel_values, vision[0], vision[1:], ivlp.config.n_ctx_vision)
    else:
        image = model.get_image_features(pixel_values=pixel_values).pooler_output
    tensors = {"prompt_learner.ctx": ctx}
    tensors |= {f"text_prompts.{i}": p for i, p in enumerate(deep_text)}
    tensors |= {f"vision_prompts.{i}": p for i, p in enumerate(vision)}
    return image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True), tensors


def official_logits(ivlp, pixel_values):
    """CustomCLIP.forward's logits: logit_scale.exp() x the cosines of `official_features`."""
    image, text, tensors = official_features(ivlp, pixel_values)
    return ivlp.clip.logit_scale.exp() * image @ text.t(), tensors


def assert_matches_official(family, model, tokenizer, **settings):
    torch.manual_seed(0)
    assert_step_matches(
        IVLPModel.from_clip(model, CLASSNAMES, tokenizer=tokenizer, **settings), family, official_logits
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"prompt_depth_text": 2, "prompt_depth_vision": 2},
        {"prompt_depth_text": 1, "prompt_depth_vision": 2, "n_ctx_vision": 3},
        {"prompt_depth_text": 2, "prompt_depth_vision": 0, "n_ctx": 3},  # language prompts only
    ],
)
def test_logits_and_every_gradient_match_the_official_computation(clip_like_backbone, settings):
    assert_matches_official(*clip_like_backbone, **settings)


def test_layers_past_the_depths_keep_the_last_prompts(clip_tokenizer):
    assert_matches_official("clip", deep_clip(4), clip_tokenizer, prompt_depth_text=3, prompt_depth_vision=2)


def test_defaults_recipe_and_checks(clip_tokenizer):
    config = IVLPConfig(classnames=CLASSNAMES)
    assert (config.n_ctx, config.n_ctx_vision, config.prompt_depth_text, config.prompt_depth_vision) == (4, 4, 9, 9)
    model = deep_clip(9)
    ivlp = IVLPModel.from_clip(model, CLASSNAMES, tokenizer=clip_tokenizer)
    assert len(ivlp.text_prompts) == 8 and len(ivlp.vision_prompts) == 9
    assert ivlp.prompt_learner.context_positions[0].tolist() == [1, 2, 3, 4]  # all of "a photo of a" learned
    args = PROMPT_METHODS["ivlp"].training_arguments(CoOpTrainingArguments("unused"))
    assert (args.learning_rate, args.per_device_train_batch_size) == (0.0025, 4)
    assert PROMPT_METHODS["ivlp"].epochs(None, 16, args) == 20
    assert PROMPT_METHODS["ivlp"].recipe("cross_dataset") is PROMPT_METHODS["ivlp"].recipe("base_to_new")
    with pytest.raises(ValueError, match=r"prompt_depth_vision=9 \(--prompt_depth_vision\) exceeds the 2 layers"):
        IVLPModel.from_clip(random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, prompt_depth_text=2)
    with pytest.raises(ValueError, match=r"prompt_depth_text \(--prompt_depth_text\) must be a whole number >= 1"):
        IVLPConfig(classnames=CLASSNAMES, prompt_depth_text=0)
    siglip, tokenizer = tiny_backbone("siglip")
    with pytest.raises(ValueError, match="IVLP .* SigLIP has no such layout"):
        IVLPModel.from_clip(siglip, CLASSNAMES, tokenizer=tokenizer, prompt_depth_text=1, prompt_depth_vision=1)


@pytest.mark.slow
def test_saved_loaded_and_trained_by_the_script(tiny_clip_dir, tmp_path):
    results = run_in_process(
        flags(tiny_clip_dir, tmp_path, "--method", "ivlp", "--prompt_depth_text", "2", "--prompt_depth_vision", "2")
    )
    assert results["method"] == "ivlp" and (results["prompt_depth_text"], results["n_ctx_vision"]) == (2, 4)
    loaded = AutoModel.from_pretrained(tmp_path / "seed1")
    assert type(loaded) is IVLPModel and len(loaded.vision_prompts) == 2
    with pytest.raises(ValueError, match="changes the image tower"):
        loaded(image_embeds=torch.randn(1, loaded.clip.config.projection_dim))

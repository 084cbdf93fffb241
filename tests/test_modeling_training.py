"""Only the context learns: CLIP is frozen, out of the optimizer, and in eval mode."""

from unittest import mock

import pytest
import torch

from coop_hf import CoOpModel
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32

CLASSNAMES = ["cat", "dog", "sunflower"]


@pytest.fixture()
def model(clip_tokenizer):
    return CoOpModel.from_clip(random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4)


def test_only_the_context_is_trainable(model):
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable == ["prompt_learner.ctx"]


def test_gradient_step_changes_only_the_context(model):
    clip_before = {key: value.clone() for key, value in model.clip.state_dict().items()}
    ctx_before = model.prompt_learner.ctx.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    output = model(pixel_values=torch.randn(4, 3, 224, 224), labels=torch.tensor([0, 1, 2, 0]))
    output.loss.backward()
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(param.grad is None for param in model.clip.parameters())
    optimizer.step()
    assert not torch.equal(model.prompt_learner.ctx, ctx_before)
    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, clip_before[key]), key


def test_clip_stays_in_eval_mode_with_dropout_off(clip_tokenizer):
    clip = random_clip(tiny_clip_config(attention_dropout=0.5))
    model = CoOpModel.from_clip(clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4)
    model.train()
    assert model.training and model.prompt_learner.training
    assert not any(module.training for module in model.clip.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(), model.get_text_features(), rtol=0, atol=0)


def test_loss_is_cross_entropy_of_logits(model):
    pixel_values, labels = torch.randn(3, 3, 224, 224), torch.tensor([2, 0, 1])
    output = model(pixel_values=pixel_values, labels=labels)
    assert output.logits.shape == (3, 3)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))


def test_image_embeds_input_gives_the_same_logits(model):
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        image_embeds = model.clip.get_image_features(pixel_values=pixel_values).pooler_output
        torch.testing.assert_close(model(image_embeds=image_embeds).logits, model(pixel_values=pixel_values).logits)


def test_logits_are_scaled_cosine_similarities(model):
    with torch.no_grad():
        output = model(pixel_values=torch.randn(2, 3, 224, 224))
        image = output.image_embeds
        text = torch.nn.functional.normalize(model.get_text_features(), dim=-1)
        assert_close_fp32(output.logits, model.clip.logit_scale.exp() * image @ text.t(), depth=1)


def test_inference_reuses_text_features_until_the_context_changes(model, monkeypatch):
    model.eval()
    image_embeds = torch.randn(2, 16)
    encode = mock.Mock(wraps=model.get_text_features)
    monkeypatch.setattr(model, "get_text_features", encode)
    with torch.no_grad():
        first = model(image_embeds=image_embeds).logits
        model(image_embeds=image_embeds)
        assert encode.call_count == 1
        model.prompt_learner.ctx.add_(1.0)
        second = model(image_embeds=image_embeds).logits
        assert encode.call_count == 2
        expected = (
            model.clip.logit_scale.exp()
            * torch.nn.functional.normalize(image_embeds, dim=-1)
            @ (torch.nn.functional.normalize(model.get_text_features(), dim=-1).t())
        )
    assert not torch.allclose(first, second)
    assert_close_fp32(second, expected, depth=1)


def test_missing_inputs_and_bad_labels_are_clear_errors(model):
    with pytest.raises(ValueError, match="needs pixel_values or precomputed image_embeds"):
        model()
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\).*got values from 0 to 3"):
        model(image_embeds=torch.randn(2, 16), labels=torch.tensor([0, 3]))


def test_set_classnames_moves_unified_context(model, clip_tokenizer):
    ctx = model.prompt_learner.ctx.detach().clone()
    model.set_classnames(["rose", "tulip", "daisy", "orchid"])
    assert model.config.id2label[3] == "orchid" and model.classnames[0] == "rose"
    assert torch.equal(model.prompt_learner.ctx, ctx)
    fresh = CoOpModel.from_clip(model.clip, ["rose", "tulip", "daisy", "orchid"], tokenizer=clip_tokenizer, n_ctx=4)
    with torch.no_grad():
        fresh.prompt_learner.ctx.copy_(ctx)
        torch.testing.assert_close(model.get_text_features(), fresh.get_text_features(), rtol=0, atol=0)
    assert model(image_embeds=torch.randn(1, 16)).logits.shape == (1, 4)


def test_set_classnames_refuses_class_specific_context(clip_tokenizer):
    model = CoOpModel.from_clip(
        random_clip(tiny_clip_config()),
        CLASSNAMES,
        tokenizer=clip_tokenizer,
        n_ctx=4,
        class_specific_context=True,
    )
    with pytest.raises(ValueError, match="class-specific context .* cannot move to a new class list"):
        model.set_classnames(["rose", "tulip"])
    with pytest.raises(ValueError, match="twice"):
        CoOpModel.from_clip(model.clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4).set_classnames(["a", "a"])

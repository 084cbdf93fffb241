"""A CoOp prompt initialised from a phrase must be CLIP on the hand-written prompt, to float precision."""

import pytest
import torch

from coop_hf import CoOpModel
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "bird of paradise", "sunflower"]


def clip_text_features(clip, tokenizer, texts):
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return clip.get_text_features(**inputs).pooler_output


@pytest.fixture(scope="module", params=[2, 49407], ids=["legacy-eos-argmax", "eos-token-id"])
def tiny_clip(request):
    return random_clip(tiny_clip_config(eos_token_id=request.param))


def assert_photo_prompt_equals_clip(clip, tokenizer, projection_dim: int) -> None:
    model = CoOpModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, ctx_init="a photo of a")
    with torch.no_grad():
        ours = model.get_text_features()
    reference = clip_text_features(clip, tokenizer, [f"a photo of a {name}." for name in CLASSNAMES])
    assert ours.shape == (len(CLASSNAMES), projection_dim)
    assert_close_fp32(ours, reference, depth=stages(clip.config.text_config.num_hidden_layers))


def test_tiny_text_features_equal_clip_on_handwritten_prompt(tiny_clip, clip_tokenizer):
    assert_photo_prompt_equals_clip(tiny_clip, clip_tokenizer, 16)


def test_vit_b32_text_features_equal_clip_on_handwritten_prompt(vit_b32_clip, clip_tokenizer):
    assert_photo_prompt_equals_clip(vit_b32_clip, clip_tokenizer, 512)


def test_vit_b32_logits_equal_clip_logits_per_image(vit_b32_clip, clip_tokenizer):
    model = CoOpModel.from_clip(vit_b32_clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="a photo of a")
    pixel_values = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    inputs = clip_tokenizer([f"a photo of a {name}." for name in CLASSNAMES], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(pixel_values=pixel_values).logits
        reference = vit_b32_clip(**inputs, pixel_values=pixel_values).logits_per_image
    assert_close_fp32(ours, reference, depth=stages(12))


@pytest.mark.parametrize(
    ("position", "sentence"),
    [("front", "{name} a photo of a."), ("middle", "a photo {name} of a."), ("end", "a photo of a {name}.")],
)
def test_class_token_position_orders_tokens_as_the_method_describes(tiny_clip, clip_tokenizer, position, sentence):
    """With the context set to the embeddings of "a photo of a", each position is CLIP on the reordered text."""
    model = CoOpModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4, class_token_position=position
    )
    phrase_ids = torch.tensor(clip_tokenizer("a photo of a", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(tiny_clip.text_model.embeddings.token_embedding(phrase_ids))
        ours = model.get_text_features()
    reference = clip_text_features(tiny_clip, clip_tokenizer, [sentence.format(name=name) for name in CLASSNAMES])
    assert_close_fp32(ours, reference, depth=stages(2))


@pytest.mark.parametrize("position", ["front", "middle", "end"])
def test_prompt_embeddings_match_hand_built_concatenation(tiny_clip, clip_tokenizer, position):
    """[SOS] ctx[:M/2] [CLASS] ctx[M/2:] [.] [EOS] and its front/end variants, built by hand from random ctx."""
    n_ctx = 5
    model = CoOpModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=n_ctx, class_token_position=position
    )
    token_embedding = tiny_clip.text_model.embeddings.token_embedding
    ctx = model.prompt_learner.ctx
    with torch.no_grad():
        built = model.prompt_learner(token_embedding)
    embed = lambda ids: token_embedding(torch.tensor(ids))  # noqa: E731
    for row, name in enumerate(CLASSNAMES):
        name_ids = clip_tokenizer(name, add_special_tokens=False)["input_ids"]
        sos, dot_eos = embed([clip_tokenizer.bos_token_id]), embed(clip_tokenizer(".")["input_ids"][1:])
        pieces = {
            "end": [sos, ctx, embed(name_ids), dot_eos],
            "front": [sos, embed(name_ids), ctx, dot_eos],
            "middle": [sos, ctx[: n_ctx // 2], embed(name_ids), ctx[n_ctx // 2 :], dot_eos],
        }[position]
        expected = torch.cat(pieces).detach()
        assert model.prompt_learner.eot_positions[row] == len(expected) - 1
        torch.testing.assert_close(built[row, : len(expected)], expected, rtol=0, atol=0)


def test_class_specific_context_with_identical_vectors_equals_unified(tiny_clip, clip_tokenizer):
    unified = CoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4)
    specific = CoOpModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4, class_specific_context=True
    )
    assert specific.prompt_learner.ctx.shape == (len(CLASSNAMES), 4, 32)
    with torch.no_grad():
        specific.prompt_learner.ctx.copy_(unified.prompt_learner.ctx.expand(len(CLASSNAMES), -1, -1))
        assert_close_fp32(specific.get_text_features(), unified.get_text_features(), depth=stages(2))


def test_class_specific_context_differs_per_class(tiny_clip, clip_tokenizer):
    """Each class reads its own context: changing class 0's context changes only class 0's feature."""
    model = CoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4, class_specific_context=True)
    with torch.no_grad():
        before = model.get_text_features()
        model.prompt_learner.ctx[0].add_(0.5)
        after = model.get_text_features()
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1:], after[1:], rtol=0, atol=0)

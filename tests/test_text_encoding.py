"""The shared-prefix text encoder equals the plain causal pass in features, logits and context gradients."""

import pytest
import torch
import torch.nn.functional as F

from coop_hf import CoOpModel
from coop_hf.text_encoding import encode_plain, encode_prefixes, encode_shared_prefix, shared_prefix_length
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "bird of paradise", "sunflower", "pink primrose"]
POSITIONS = ["end", "middle", "front"]


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


def make_model(clip, tokenizer, position="end", class_specific=False, n_ctx=6, classnames=CLASSNAMES):
    model = CoOpModel.from_clip(
        clip,
        classnames,
        tokenizer=tokenizer,
        n_ctx=n_ctx,
        class_token_position=position,
        class_specific_context=class_specific,
    )
    with torch.no_grad():  # a context far from N(0, 0.02), so the encoder's output depends on it visibly
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(1))
    return model


def prefix_of(model) -> int:
    learner = model.prompt_learner
    return shared_prefix_length(
        learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=learner.class_specific
    )


def features_loss_and_grad(model, encode):
    """Text features, a CoOp cross-entropy on fixed image features, and its gradient w.r.t. the context."""
    learner = model.prompt_learner
    learner.ctx.grad = None
    features = encode(learner(model.clip.text_model.embeddings.token_embedding), learner.eot_positions)
    generator = torch.Generator().manual_seed(0)
    image_embeds = torch.randn(8, features.shape[1], generator=generator)
    labels = torch.randint(0, len(features), (8,), generator=generator)
    logits = model.clip.logit_scale.exp() * F.normalize(image_embeds, dim=-1) @ F.normalize(features, dim=-1).t()
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return features.detach(), logits.detach(), learner.ctx.grad.clone()


def assert_same(actual, expected, layers=2):
    """(features, logits, context gradient) or (features, gradient) equal up to float32 rounding
    (tests/tolerances.py): forward through the text tower's `layers`, and back again for the gradient."""
    *values, grad = actual
    *plain_values, plain_grad = expected
    for ours, plain in zip(values, plain_values, strict=True):
        assert_close_fp32(ours, plain, depth=stages(layers))
    assert_close_fp32(grad, plain_grad, depth=stages(layers, backward=True))


@pytest.mark.parametrize("class_specific", [False, True], ids=["unified", "class-specific"])
@pytest.mark.parametrize("position", POSITIONS)
def test_shared_prefix_equals_plain_in_features_logits_and_gradient(
    tiny_clip, clip_tokenizer, position, class_specific
):
    model = make_model(tiny_clip, clip_tokenizer, position, class_specific)
    prefix = prefix_of(model)
    plain = features_loss_and_grad(model, lambda e, eot: encode_plain(model.clip, e, eot))
    shared = features_loss_and_grad(model, lambda e, eot: encode_shared_prefix(model.clip, e, eot, prefix))
    assert plain[2].abs().sum() > 0
    assert_same(shared, plain)


@pytest.mark.parametrize("position", POSITIONS)
def test_model_text_features_and_gradient_equal_plain_path(tiny_clip, clip_tokenizer, position):
    """`CoOpModel.get_text_features` (whichever path it dispatches to) is the plain computation."""
    model = make_model(tiny_clip, clip_tokenizer, position)
    plain = features_loss_and_grad(model, lambda e, eot: encode_plain(model.clip, e, eot))
    dispatched = features_loss_and_grad(model, lambda e, eot: model.get_text_features())
    assert_same(dispatched, plain)


@pytest.mark.parametrize(
    ("position", "class_specific", "expected"),
    [("end", False, 1 + 6), ("middle", False, 1 + 3), ("front", False, 1), ("end", True, 1), ("middle", True, 1)],
)
def test_shared_prefix_length_follows_the_token_layout(tiny_clip, clip_tokenizer, position, class_specific, expected):
    assert prefix_of(make_model(tiny_clip, clip_tokenizer, position, class_specific)) == expected


def test_shared_prefix_extends_over_common_class_tokens_and_stops_before_the_first_eot(tiny_clip, clip_tokenizer):
    names = ["red rose", "red tulip"]
    red_tokens = len(clip_tokenizer("red", add_special_tokens=False)["input_ids"])
    assert prefix_of(make_model(tiny_clip, clip_tokenizer, classnames=names)) == 1 + 6 + red_tokens
    single = make_model(tiny_clip, clip_tokenizer, classnames=["sunflower"])
    assert prefix_of(single) == int(single.prompt_learner.eot_positions[0])


def test_single_class_encodes_only_the_eot_token_per_class(tiny_clip, clip_tokenizer):
    model = make_model(tiny_clip, clip_tokenizer, classnames=["sunflower"])
    prefix = prefix_of(model)
    plain = features_loss_and_grad(model, lambda e, eot: encode_plain(model.clip, e, eot))
    shared = features_loss_and_grad(model, lambda e, eot: encode_shared_prefix(model.clip, e, eot, prefix))
    assert_same(shared, plain)


@pytest.mark.parametrize("options", [{"chunk_size": 4}, {"checkpoint": True}, {"chunk_size": 1, "checkpoint": True}])
@pytest.mark.parametrize("encoder", ["plain", "shared"])
def test_chunked_and_checkpointed_variants_are_equal(tiny_clip, clip_tokenizer, encoder, options):
    model = make_model(tiny_clip, clip_tokenizer)
    prefix = prefix_of(model)

    def encode(embeds, eot, **kwargs):
        if encoder == "plain":
            return encode_plain(model.clip, embeds, eot, **kwargs)
        return encode_shared_prefix(model.clip, embeds, eot, prefix, **kwargs)

    expected = features_loss_and_grad(model, encode)
    actual = features_loss_and_grad(model, lambda e, eot: encode(e, eot, **options))
    assert_same(actual, expected)


def test_text_features_share_the_prefix_the_layout_allows(tiny_clip, clip_tokenizer, monkeypatch):
    import coop_hf.text_encoding as text_encoding

    prefixes = []
    original = text_encoding.encode_shared_prefix
    monkeypatch.setattr(
        text_encoding,
        "encode_shared_prefix",
        lambda *args, **kwargs: prefixes.append(args[3]) or original(*args, **kwargs),
    )
    with torch.no_grad():
        for position in POSITIONS:
            model = make_model(tiny_clip, clip_tokenizer, position)
            model.get_text_features()
    assert prefixes == [1 + 6, 1 + 3, 1]


def test_vit_b32_shared_prefix_equals_plain(vit_b32_clip, clip_tokenizer):
    model = make_model(vit_b32_clip, clip_tokenizer, n_ctx=16, classnames=CLASSNAMES[:4])
    with torch.no_grad():
        model.prompt_learner.ctx.mul_(0.02)  # the method's N(0, 0.02) initialisation, at the real scale
    prefix = prefix_of(model)
    plain = features_loss_and_grad(model, lambda e, eot: encode_plain(model.clip, e, eot))
    shared = features_loss_and_grad(model, lambda e, eot: encode_shared_prefix(model.clip, e, eot, prefix))
    assert_same(shared, plain, layers=12)


def test_shared_prefix_rejects_a_prefix_past_the_eot(tiny_clip, clip_tokenizer):
    model = make_model(tiny_clip, clip_tokenizer)
    learner = model.prompt_learner
    embeds = learner(tiny_clip.text_model.embeddings.token_embedding)
    with pytest.raises(ValueError, match="end-of-text"):
        encode_shared_prefix(tiny_clip, embeds, learner.eot_positions, int(learner.eot_positions.min()) + 1)


@pytest.mark.parametrize("options", [{}, {"chunk_size": 2}, {"checkpoint": True}])
def test_several_prefixes_equal_plain_on_every_prefix_suffix_pair(tiny_clip, clip_tokenizer, options):
    """`encode_prefixes`: each of 3 prefixes followed by each class's suffix, as every full prompt encoded plainly;
    the same gradient w.r.t. the prefixes."""
    model = make_model(tiny_clip, clip_tokenizer)
    learner = model.prompt_learner
    prefix = prefix_of(model)
    with torch.no_grad():
        embeds = learner(tiny_clip.text_model.embeddings.token_embedding)
    generator = torch.Generator().manual_seed(2)
    prefixes = embeds[:1, :prefix] + torch.randn(3, prefix, embeds.shape[-1], generator=generator)
    weights = torch.randn(3, len(CLASSNAMES), 16, generator=generator)

    def features_and_grad(encode):
        leaf = prefixes.clone().requires_grad_(True)
        features = encode(leaf)
        (features * weights).sum().backward()
        return features.detach(), leaf.grad

    def plain(leaf):
        suffixes = embeds[:, prefix:]
        prompts = [torch.cat([row.expand(len(suffixes), -1, -1), suffixes], dim=1) for row in leaf]
        return torch.stack([encode_plain(tiny_clip, prompt, learner.eot_positions) for prompt in prompts])

    expected = features_and_grad(plain)
    actual = features_and_grad(
        lambda leaf: encode_prefixes(tiny_clip, leaf, embeds[:, prefix:], learner.eot_positions, **options)
    )
    assert actual[0].shape == (3, len(CLASSNAMES), 16) and expected[1].abs().sum() > 0
    assert_same(actual, expected)


def test_several_prefixes_reject_a_suffix_that_ends_before_the_eot(tiny_clip, clip_tokenizer):
    model = make_model(tiny_clip, clip_tokenizer)
    learner = model.prompt_learner
    prefix = prefix_of(model)
    embeds = learner(tiny_clip.text_model.embeddings.token_embedding)
    with pytest.raises(ValueError, match="too few to reach the last end-of-text position"):
        encode_prefixes(tiny_clip, embeds[:2, :prefix], embeds[:, prefix:-1], learner.eot_positions)

import pytest
from transformers import AutoConfig

from coop_hf import CoOpConfig, CoOpModel, LinearClassifierModel, TextEncoderFineTuningModel
from tests.conftest import random_clip, tiny_clip_config


def test_config_round_trip_and_labels(tmp_path):
    config = CoOpConfig(base_model_name_or_path="openai/clip-vit-base-patch32", classnames=["cat", "dog"], n_ctx=4)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CoOpConfig)
    assert loaded.classnames == ["cat", "dog"]
    assert loaded.n_ctx == 4 and loaded.class_token_position == "end" and not loaded.class_specific_context
    assert loaded.id2label == {0: "cat", 1: "dog"} and loaded.label2id == {"cat": 0, "dog": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(class_token_position="start"), "class_token_position='start' is not supported: use one of"),
        (dict(n_ctx=0), "n_ctx must be a positive number"),
        (dict(n_ctx=-3), "n_ctx must be a positive number"),
        (dict(ctx_init="a photo of a", class_specific_context=True), "ctx_init cannot be combined"),
        (dict(classnames=[]), "class list is empty"),
        (dict(classnames=["cat", " "]), "empty or non-string names at positions \\[1\\]"),
        (dict(classnames=["cat", "dog", "cat"]), "'cat' twice \\(positions 0 and 2\\)"),
    ],
)
def test_config_rejects_inconsistent_settings(kwargs, message):
    kwargs = {"classnames": ["cat", "dog"], **kwargs}
    with pytest.raises(ValueError, match=message):
        CoOpConfig(**kwargs)


def test_ctx_init_length_is_counted_in_bpe_tokens(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    # "a photo of a" is 4 words and 4 tokens; "an origami-style photo" is 3 words but 5 BPE tokens.
    assert CoOpModel.from_clip(clip, ["cat"], tokenizer=clip_tokenizer, ctx_init="a photo of a").config.n_ctx == 4
    phrase = "an origami-style photo"
    model = CoOpModel.from_clip(clip, ["cat"], tokenizer=clip_tokenizer, ctx_init=phrase)
    assert model.config.n_ctx == len(clip_tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 5
    assert model.prompt_learner.ctx.shape == (5, 32)


def test_prompt_longer_than_text_model_is_rejected(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    long_name = " ".join(["flower"] * 70)
    with pytest.raises(
        ValueError,
        match="The prompt for class 'flower flower.* tokens long but the text model takes at most 77",
    ):
        CoOpModel.from_clip(clip, ["cat", long_name], tokenizer=clip_tokenizer, n_ctx=16)


def test_n_ctx_mismatching_ctx_init_is_rejected(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    config = CoOpConfig(classnames=["cat"], n_ctx=8, ctx_init="a photo of a")
    with pytest.raises(ValueError, match="is 4 BPE tokens but n_ctx=8"):
        CoOpModel(config, clip=clip, tokenizer=clip_tokenizer)


@pytest.mark.parametrize("model_class", [CoOpModel, LinearClassifierModel, TextEncoderFineTuningModel])
def test_a_model_without_class_names_is_refused(model_class, clip_tokenizer):
    config = model_class.config_class()  # no class list: what an empty or truncated config.json would give
    message = f"classnames is empty: {model_class.__name__} classifies over the class names"
    with pytest.raises(ValueError, match=message):
        model_class(config, random_clip(tiny_clip_config()), clip_tokenizer)

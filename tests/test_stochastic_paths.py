"""The fast paths are exact in distribution, not only in value: a module that draws random numbers (CLIP-LoRA's
LoRA dropout, attention dropout, drop-path) draws for every class and position, as the reference does when it
encodes every class's prompt padded to 77 tokens ([77, classes, width] masks); the shared prefix is encoded once
only where nothing draws."""

import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from coop_hf import PROMPT_MODELS, CLIPLoRAModel
from coop_hf.text_encoding import draws_random_numbers, encode_prefixes
from tests.conftest import random_clip, tiny_clip_config
from tests.test_maple import CLASSNAMES


class RecordingDropout(nn.Dropout):
    """torch's dropout, keeping every mask it draws (scaled by 1 / (1 - p), as torch scales what it keeps)."""

    def __init__(self, p: float):
        super().__init__(p)
        self.masks = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = torch.bernoulli(torch.full_like(hidden, 1 - self.p)) / (1 - self.p)
        self.masks.append(mask)
        return hidden * mask


def text_lora_layers(model: CLIPLoRAModel) -> dict[str, LoraLayer]:
    return {
        name: module
        for name, module in model.clip.named_modules()
        if isinstance(module, LoraLayer) and name.startswith("text_model.")
    }


def lora_with_recorded_text_dropout(clip, tokenizer, classnames):
    torch.manual_seed(0)
    model = CLIPLoRAModel.from_clip(clip, classnames, tokenizer=tokenizer, lora_dropout=0.25)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    layers = text_lora_layers(model)
    for layer in layers.values():
        layer.lora_dropout["default"] = RecordingDropout(0.25)
    return model.train(), layers


def per_class_masks(model: CLIPLoRAModel, recorded: list[torch.Tensor], length: int) -> torch.Tensor:
    """[classes, length, width] masks of one projection, each class's row taken from the call that encoded it (the
    plain path encodes the classes in groups of equal end-of-text position, in ascending order), padded with ones
    after its end-of-text token: what follows it cannot reach the feature of a causal tower."""
    eots = model.eot_positions
    groups = eots.unique().tolist()
    assert len(recorded) == len(groups)  # one draw per group and projection, none for a shared prefix
    masks = torch.ones(len(eots), length, recorded[0].shape[-1])
    for mask, eot in zip(recorded, groups, strict=True):
        rows = (eots == eot).nonzero().flatten()
        assert mask.shape[:2] == (len(rows), eot + 1)
        masks[rows, : eot + 1] = mask
    return masks


def official_text_features(model, clip, tokenizer, masks):
    """The official LinearLoRA's training forward on the plain backbone, given its dropout masks: every updated
    text projection x W^T + b + alpha / sqrt(r) * (mask * x) A^T B^T, the class prompts tokenized to the full
    context and encoded in one batch, as run_lora encodes them."""
    config = model.config
    scaling = config.lora_alpha / math.sqrt(config.lora_rank)
    modules = dict(clip.named_modules())
    handles = []
    for name, layer in text_lora_layers(model).items():
        a, b, mask = layer.lora_A["default"].weight, layer.lora_B["default"].weight, masks[name]

        def add_update(module, inputs, output, a=a, b=b, mask=mask):
            return output + scaling * (inputs[0] * mask) @ a.T @ b.T

        handles.append(modules[name].register_forward_hook(add_update))
    length = clip.config.text_config.max_position_embeddings
    texts = [config.template.format(name) for name in model.classnames]
    ids = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]
    try:
        return clip.get_text_features(input_ids=ids).pooler_output
    finally:
        for handle in handles:
            handle.remove()


def test_clip_lora_text_dropout_draws_per_class_and_position_as_the_reference(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    model, layers = lora_with_recorded_text_dropout(clip, clip_tokenizer, CLASSNAMES)  # "sea lion": two EOTs
    assert model.prefix_length == 5  # "[SOS] a photo of a" is shared, yet drawn for every class
    features = model.get_text_features()
    length = clip.config.text_config.max_position_embeddings
    masks = {
        name: per_class_masks(model, layer.lora_dropout["default"].masks, length) for name, layer in layers.items()
    }
    for name, mask in masks.items():
        for i in range(len(CLASSNAMES)):
            for j in range(i):
                eot = int(model.eot_positions[[i, j]].min())
                assert not torch.equal(mask[i, : eot + 1], mask[j, : eot + 1]), f"{name}: classes {j}, {i} share"
    with torch.no_grad():
        expected = official_text_features(model, clip, clip_tokenizer, masks)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)


def test_the_shared_prefix_is_encoded_once_only_where_nothing_draws(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    model = CLIPLoRAModel.from_clip(clip, CLASSNAMES, tokenizer=clip_tokenizer, lora_dropout=0.25)
    text_layers = model.backbone.text_layers
    assert draws_random_numbers(model.train()) and any(map(draws_random_numbers, text_layers))
    assert not draws_random_numbers(model.eval())
    no_dropout = CLIPLoRAModel.from_clip(clip, CLASSNAMES, tokenizer=clip_tokenizer, lora_dropout=0.0).train()
    assert not draws_random_numbers(no_dropout.clip)  # the fast path keeps its speed
    attention = clip.text_model.encoder.layers[0].self_attn
    attention.dropout = 0.1
    assert not draws_random_numbers(attention)  # the frozen backbone stays in eval mode
    assert draws_random_numbers(attention.train()) and not draws_random_numbers(attention.train().eval())
    attention.dropout = 0.0

    model.train()
    embeds = model.backbone.token_embedding(model.input_ids)
    with pytest.raises(ValueError, match="draws random numbers"):
        encode_prefixes(model.backbone, embeds[:1, :5], embeds[:, 5:], model.eot_positions)


SHALLOW = {"maple": {"prompt_depth": 2}, "ivlp": {"prompt_depth_text": 2, "prompt_depth_vision": 2}}
SHALLOW["promptsrc"] = SHALLOW["ivlp"]


@pytest.mark.parametrize("model_type", sorted(set(PROMPT_MODELS) - {"coop-ensemble"}))  # an ensemble of CoOps
def test_only_clip_lora_draws_random_numbers_in_training(model_type, clip_tokenizer):
    """The audit of every method: in training only CLIP-LoRA's modules draw (its dropout, handled above); the
    others are deterministic given their inputs, as their references are, so their shared paths are exact. A
    method that adds a random module must make its shared computations draw per class, then join this list."""
    clip = random_clip(tiny_clip_config())
    model = PROMPT_MODELS[model_type].from_clip(
        clip, CLASSNAMES, tokenizer=clip_tokenizer, **SHALLOW.get(model_type, {})
    )
    assert draws_random_numbers(model.train()) == (model_type == "clip_lora")

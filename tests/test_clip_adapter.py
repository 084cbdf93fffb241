"""CLIP-Adapter against a reference computation written from the official code (gaopengcuhk/CLIP-Adapter,
clip_adapter.py: Adapter, CustomCLIP.forward, CUSTOM_TEMPLATES), on the same random weights."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from coop_hf import CLIPAdapterConfig, CLIPAdapterModel
from coop_hf.data.templates import templates_for
from tests.test_maple import CLASSNAMES, assert_step_matches
from tests.test_train_e2e import flags, run_in_process

# the reference's CUSTOM_TEMPLATES, by its dataset names (CoOp's benchmark names here)
OFFICIAL_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.", "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.", "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.", "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.", "sun397": "a photo of a {}.", "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.", "imagenet": "a photo of a {}.", "imagenet_sketch": "a photo of a {}.",
    "imagenet_v2": "a photo of a {}.", "imagenet_a": "a photo of a {}.", "imagenet_r": "a photo of a {}.",
}  # fmt: skip


def official_logits(model, clip, tokenizer, pixel_values, ratio=0.2):
    """CustomCLIP.forward on copies of the adapter's weights: x = Adapter(f) (Linear, ReLU, Linear, ReLU, no
    biases), f = ratio x + (1 - ratio) f (clip_adapter.py's ratio 0.2 unless a test sets another), the template's
    text features (clip.tokenize, encode_text), both normalised,
    logit_scale.exp() x the cosines."""
    down, up = (model.adapter[i].weight.detach().clone().requires_grad_(True) for i in (0, 2))
    with torch.no_grad():
        image_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        texts = [model.config.template.format(name) for name in CLASSNAMES]
        length = clip.config.text_config.max_position_embeddings
        ids = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]
        text_features = clip.get_text_features(input_ids=ids).pooler_output
    x = F.relu(F.relu(image_features @ down.t()) @ up.t())
    image_features = ratio * x + (1 - ratio) * image_features
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = clip.logit_scale.exp() * image_features @ text_features.t()
    return logits, {"adapter.0.weight": down, "adapter.2.weight": up}


@pytest.mark.parametrize("settings", [{}, {"reduction": 2, "residual_ratio": 0.6, "template": "{} texture."}])
def test_logits_and_gradients_match_the_official_computation(clip_like_backbone, settings):
    family, clip, tokenizer = clip_like_backbone
    torch.manual_seed(0)
    model = CLIPAdapterModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, **settings)
    ratio = settings.get("residual_ratio", 0.2)  # the official value, not read back from the model
    official = lambda adapter, pixel_values: official_logits(adapter, clip, tokenizer, pixel_values, ratio)  # noqa: E731
    output, pixel_values, copies = assert_step_matches(model, family, official)
    for name, tensor in copies.items():
        assert tensor.grad.abs().sum() > 0, name
    with torch.no_grad():  # cached image features give the same logits
        features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        torch.testing.assert_close(model(image_embeds=features).logits, output.logits)


def test_templates_and_checks():
    assert {dataset: templates_for(dataset) for dataset in OFFICIAL_TEMPLATES} == OFFICIAL_TEMPLATES
    assert CLIPAdapterConfig.dataset_settings("dtd") == {"template": "{} texture."}
    with pytest.raises(ValueError, match=r"residual_ratio \(--residual_ratio\) must be in \[0, 1\]"):
        CLIPAdapterConfig(classnames=CLASSNAMES, residual_ratio=1.5)


@pytest.mark.slow
def test_trained_on_cached_views_saved_and_moved_to_new_classes(tiny_clip_dir, tmp_path):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", "clip-adapter", "--cached_views", "2")
    del arguments[arguments.index("--n_ctx") : arguments.index("--n_ctx") + 2]  # a CoOp setting
    results = run_in_process(arguments)
    assert results["method"] == "clip-adapter" and results["template"] == "a photo of a {}, a type of flower."
    loaded = AutoModel.from_pretrained(tmp_path / "seed1")
    assert type(loaded) is CLIPAdapterModel and sorted(loaded.prompt_state_dict()) == [
        "adapter.0.weight", "adapter.2.weight"
    ]  # fmt: skip
    loaded.set_classnames(["rose", "tulip"])
    pixel_values = torch.randn(1, 3, 224, 224)
    assert loaded(pixel_values=pixel_values).logits.shape == (1, 2)

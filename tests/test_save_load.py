"""The prompt file holds only the context; it reloads onto its base CLIP, and bad loads fail loudly."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, CLIPModel, pipeline

from coop_hf import CoOpModel
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import fp32_tolerance, stages

CLASSNAMES = ["cat", "dog", "sunflower"]


@pytest.fixture()
def trained(tiny_clip_dir):
    model = CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(1))
    return model


def test_round_trip_gives_identical_logits(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    saved = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(os.listdir(tmp_path)) == saved
    assert list(load_file(tmp_path / "model.safetensors")) == ["prompt_learner.ctx"]
    reloaded = CoOpModel.from_pretrained(tmp_path)
    assert reloaded.config.base_model_name_or_path == trained.config.base_model_name_or_path
    image_embeds = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(image_embeds=image_embeds).logits,
            trained(image_embeds=image_embeds).logits,
            rtol=0,
            atol=0,
        )


def test_vit_b32_prompt_file_is_kilobytes(vit_b32_clip, clip_tokenizer, tmp_path):
    model = CoOpModel.from_clip(vit_b32_clip, [f"class {i}" for i in range(102)], tokenizer=clip_tokenizer, n_ctx=16)
    model.save_pretrained(tmp_path)
    size = os.path.getsize(tmp_path / "model.safetensors")
    assert size < 100 * 1024, size
    assert size >= 16 * 512 * 4  # the context itself, nothing less


def test_from_pretrained_accepts_a_loaded_clip_an_id_or_a_path(trained, tiny_clip_dir, tmp_path):
    trained.save_pretrained(tmp_path)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    from_model = CoOpModel.from_pretrained(tmp_path, clip_model=clip)
    assert from_model.clip is clip
    from_path = CoOpModel.from_pretrained(tmp_path, clip_model=str(tiny_clip_dir))
    torch.testing.assert_close(from_model.prompt_learner.ctx, from_path.prompt_learner.ctx, rtol=0, atol=0)


def test_auto_classes_find_coop(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    for auto_class in (AutoModel, AutoModelForImageClassification):
        model = auto_class.from_pretrained(tmp_path)
        assert isinstance(model, CoOpModel)
        torch.testing.assert_close(model.prompt_learner.ctx, trained.prompt_learner.ctx, rtol=0, atol=0)


def test_unified_prompt_loads_onto_another_class_list(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    model = CoOpModel.from_pretrained(tmp_path)
    model.set_classnames(["rose", "tulip"])
    assert model(image_embeds=torch.randn(2, 16)).logits.shape == (2, 2)
    torch.testing.assert_close(model.prompt_learner.ctx, trained.prompt_learner.ctx, rtol=0, atol=0)


def test_shape_mismatch_is_an_error_not_a_reinitialisation(trained, tmp_path, clip_tokenizer):
    trained.save_pretrained(tmp_path)
    wider = random_clip(tiny_clip_config(hidden_size=64, num_attention_heads=4))
    with pytest.raises(
        ValueError, match=r"holds prompt_learner.ctx of shape \(4, 32\) but this model expects \(4, 64\)"
    ):
        CoOpModel.from_pretrained(tmp_path, clip_model=wider, tokenizer=clip_tokenizer)
    save_file({"prompt_learner.ctx": torch.zeros(3, 4, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"of shape \(3, 4, 32\) but this model expects \(4, 32\)"):
        CoOpModel.from_pretrained(tmp_path)
    save_file({"prompt_learner.ctx": torch.zeros(4, 32), "extra": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"not a CoOp prompt for this model: missing \[\], unexpected \['extra'\]"):
        CoOpModel.from_pretrained(tmp_path)


def test_config_mismatch_is_an_error(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["class_specific_context"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"of shape \(4, 32\) but this model expects \(3, 4, 32\)"):
        CoOpModel.from_pretrained(tmp_path)


def test_missing_base_model_is_a_clear_error(trained, tmp_path):
    trained.config.base_model_name_or_path = str(tmp_path / "nowhere")
    trained.save_pretrained(tmp_path / "prompt")
    with pytest.raises(OSError, match="(?s)Could not load the base CLIP .*nowhere.*Pass clip_model="):
        CoOpModel.from_pretrained(tmp_path / "prompt")


def test_model_card_carries_hub_metadata_and_usage(trained, tmp_path):
    trained.save_pretrained(tmp_path / "local")
    assert "base_model:" not in (tmp_path / "local" / "README.md").read_text()  # a local path is no Hub id
    trained.config.base_model_name_or_path = "openai/clip-vit-base-patch32"
    trained.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\n")
    assert "library_name: coop-hf" in card and "base_model: openai/clip-vit-base-patch32" in card
    assert "pipeline_tag: image-classification" in card
    assert "CoOpModel.from_pretrained(" in card
    assert "| context vectors (`n_ctx`) | 4 |" in card and "| classes | 3 (cat, dog, sunflower) |" in card


def test_interrupted_save_keeps_the_previous_prompt(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with torch.no_grad():
        trained.prompt_learner.ctx.add_(1.0)
    with mock.patch("coop_hf.modeling_utils.render_model_card", side_effect=RuntimeError("disk full")):
        with pytest.raises(RuntimeError, match="disk full"):
            trained.save_pretrained(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    assert not [name for name in os.listdir(tmp_path.parent) if name.endswith(".tmp")]


def test_trainer_style_state_dict_is_filtered_to_the_prompt(trained, tmp_path):
    trained.save_pretrained(tmp_path, state_dict=trained.state_dict())
    assert list(load_file(tmp_path / "model.safetensors")) == ["prompt_learner.ctx"]


def test_push_to_hub_uploads_the_prompt_folder(trained):
    uploaded = {}

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update({name: os.path.getsize(os.path.join(folder_path, name)) for name in os.listdir(folder_path)})
        uploaded["repo_id"] = repo_id
        return "https://huggingface.co/org/coop-test/commit/0"

    with (
        mock.patch("huggingface_hub.HfApi.create_repo", return_value=mock.Mock(repo_id="org/coop-test")),
        mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload_folder),
    ):
        url = trained.push_to_hub("org/coop-test")
    assert url.endswith("/commit/0") and uploaded["repo_id"] == "org/coop-test"
    assert {"README.md", "config.json", "model.safetensors"} <= uploaded.keys()


def test_serves_in_the_image_classification_pipeline(trained, tiny_clip_dir):
    classifier = pipeline(
        "image-classification",
        model=trained,
        image_processor=AutoImageProcessor.from_pretrained(tiny_clip_dir),
    )
    image = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype("uint8"))
    predictions = classifier(image, top_k=3)
    assert sorted(p["label"] for p in predictions) == sorted(CLASSNAMES)
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        probs = trained(**processor(images=image, return_tensors="pt")).logits.softmax(-1)[0]
    top = int(probs.argmax())
    assert predictions[0]["label"] == CLASSNAMES[top]
    assert predictions[0]["score"] == pytest.approx(float(probs[top]), abs=fp32_tolerance(stages(2)))  # at most 1


def test_a_base_path_that_does_not_resolve_names_the_flag(trained, tmp_path, monkeypatch):
    """A prompt whose config names its base by a relative path (as older versions saved it) fails, from another
    directory, with an error naming clip_model= / --model_name_or_path, not the Hub's repo-id validation."""
    trained.config.base_model_name_or_path = "../tiny-clip"
    trained.save_pretrained(tmp_path / "prompt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        OSError, match=r"(?s)Could not load the base CLIP '\.\./tiny-clip'.*clip_model= \(--model_name_or_path\)"
    ):
        CoOpModel.from_pretrained(tmp_path / "prompt")


def test_the_cards_base_model_is_a_hub_id_or_nothing():
    """A card's `base_model` names a Hub repository: open_clip's hf-hub: names map to theirs, its own names and
    local paths to none."""
    from coop_hf.hub import hub_id

    assert hub_id("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert hub_id("hf-hub:timm/resnet50_clip.openai") == "timm/resnet50_clip.openai"
    for name in ("open_clip:RN50/openai", "local-dir:/models/rn50", "/models/rn50", "./tiny", "runs/a/b"):
        assert hub_id(name) is None, name

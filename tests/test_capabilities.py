"""Capabilities that methods declare and runners rely on: a method that changes the image tower is never fed cached
image features, one that cannot move to new classes says so, and one with its own loss keeps it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coop_hf import CoOpModel, KgCoOpModel, LinearClassifierModel
from coop_hf.runners import Experiment, LoadedBackbone
from coop_hf.runners.evaluation import evaluate_prompt
from coop_hf.runners.prompt_learning import PromptLearning
from coop_hf.runners.settings import RunSettings
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA


class VisionShiftCoOp(CoOpModel):
    """CoOp plus a learned vector added to the image tokens before the first vision layer: a method that changes
    the image tower, as deep vision prompts and LoRA do."""

    image_tower_frozen = False

    def __init__(self, config, clip, tokenizer, image_processor=None):
        super().__init__(config, clip, tokenizer, image_processor)
        self.vision_shift = nn.Parameter(torch.full((clip.config.vision_config.hidden_size,), 0.5))
        self.embeds_given = []

    def image_features(self, pixel_values, image_embeds, pixel_attention_mask=None, spatial_shapes=None):
        self.embeds_given.append(image_embeds is not None)
        if image_embeds is not None:
            return super().image_features(pixel_values, image_embeds)  # refuses them
        return self.backbone.image_features(
            pixel_values, layer_hook=lambda index, hidden: hidden + self.vision_shift if index == 0 else hidden
        )


@pytest.fixture(scope="module")
def experiment(tiny_clip_dir):
    return Experiment(LoadedBackbone.load(str(tiny_clip_dir)), "oxford_flowers", str(DATA), batch_size=50)


def test_image_embeds_are_refused_by_a_method_that_changes_the_image_tower(experiment):
    backbone = experiment.backbone
    model = VisionShiftCoOp.from_clip(backbone.clip, experiment.classnames, tokenizer=backbone.tokenizer, n_ctx=2)
    with pytest.raises(ValueError, match="changes the image tower.*pass pixel_values"):
        model(image_embeds=torch.randn(2, backbone.clip.config.projection_dim))


@pytest.mark.slow
def test_runs_of_a_method_that_changes_the_image_tower_never_use_the_feature_cache(experiment, tmp_path):
    """Training, the test evaluation and transfer evaluation all go through the method's own image path: its
    accuracy is that of its pixel logits, and no call ever carried cached features."""
    method = PromptLearning("vision-shift", VisionShiftCoOp)
    args = CoOpTrainingArguments(
        str(tmp_path), num_train_epochs=1, learning_rate=0.05, disable_tqdm=True, per_device_eval_batch_size=50
    )
    results = method.run(experiment, RunSettings(shots=1, seeds=[1]), args, {"n_ctx": 2})
    backbone = experiment.backbone
    model = VisionShiftCoOp.from_pretrained(tmp_path / "seed1", clip_model=backbone.clip, tokenizer=backbone.tokenizer)
    assert not torch.equal(model.vision_shift, torch.full_like(model.vision_shift, 0.5))  # it trained
    scores = evaluate_prompt(model, experiment)
    assert scores["accuracy"] == pytest.approx(results["per_seed"][0]["accuracy"])
    assert model.embeds_given and not any(model.embeds_given)
    # The same prompt on the cached features would be another model: the shift would be missing.
    with torch.no_grad():
        text = F.normalize(model.get_text_features(), dim=-1)
        cached = model.backbone.logits(F.normalize(experiment.test["image_embeds"][:8], dim=-1), text)
        pixels = next(iter(torch.utils.data.DataLoader(experiment.test_pixels, batch_size=8)))["pixel_values"]
        assert not torch.allclose(model(pixel_values=pixels).logits, cached, atol=1e-4)

    with pytest.raises(ValueError, match="--cached_views.*changes the image tower"):
        views = CoOpTrainingArguments(str(tmp_path / "views"), cached_views=2)
        method.run(experiment, RunSettings(shots=1, seeds=[1]), views, {"n_ctx": 2})


def test_declared_capabilities():
    assert CoOpModel.image_tower_frozen and CoOpModel.transfers_to_new_classes and not CoOpModel.has_own_loss
    assert KgCoOpModel.has_own_loss
    assert not LinearClassifierModel.transfers_to_new_classes
    with pytest.raises(ValueError, match="--loss gce would replace KgCoOp's own loss"):
        PromptLearning("kgcoop", KgCoOpModel).check_arguments(CoOpTrainingArguments("unused"), "gce")


@pytest.mark.slow
def test_a_runs_prompt_config_is_resolved_once(tiny_clip_dir, tmp_path, monkeypatch):
    """The prompt settings of a run are resolved once, before any work, whatever the number of seeds."""
    from tests.test_train_e2e import flags, run_in_process

    calls = []
    build_config = CoOpModel.build_config.__func__
    monkeypatch.setattr(
        CoOpModel, "build_config", classmethod(lambda *a, **k: calls.append(1) or build_config(*a, **k))
    )
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--seeds", "1", "2", "--num_train_epochs", "1"))
    assert [run["seed"] for run in results["per_seed"]] == [1, 2] and results["n_ctx"] == 4
    assert len(calls) == 1

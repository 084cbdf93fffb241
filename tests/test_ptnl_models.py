"""PTNL's Classifier-R, Classifier-C and TEnc-FT: zero-shot CLIP exactly at init (Classifier-C, TEnc-FT), only the
intended parameters train (the shared CLIP untouched), save / load round trips and the command line."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForImageClassification

from coop_hf import ClassifierConfig, LinearClassifierModel, TextEncoderFineTuningModel
from coop_hf.baselines import zero_shot_logits, zero_shot_weights
from coop_hf.losses import loss_from_name
from tests.conftest import DATA, load_example, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "sunflower"]
FLOWER = "a photo of a {}, a type of flower."


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


def image_embeds(seed: int, batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed))


def zero_shot(clip, tokenizer, template, embeds):
    return zero_shot_logits(clip, zero_shot_weights(clip, tokenizer, CLASSNAMES, [template]), embeds)


def clip_snapshot(clip):
    return {key: value.clone() for key, value in clip.state_dict().items()}


def assert_clip_unchanged(clip, before):
    after = clip.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


@pytest.mark.parametrize("template", ["a photo of a {}.", FLOWER])
def test_untrained_classifier_c_and_tenc_ft_are_zero_shot_clip(tiny_clip, clip_tokenizer, template):
    embeds = image_embeds(0)
    expected = zero_shot(tiny_clip, clip_tokenizer, template, embeds)
    head = LinearClassifierModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, init="text", template=template
    )
    tenc = TextEncoderFineTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=template)
    with torch.no_grad():
        assert_close_fp32(head(image_embeds=embeds).logits, expected, depth=stages(2))
        assert_close_fp32(tenc(image_embeds=embeds).logits, expected, depth=stages(2))
    assert torch.equal(head.classifier.bias, torch.zeros(4))
    # The other template gives other logits: the comparison sees the template.
    other = zero_shot(tiny_clip, clip_tokenizer, "a {}.", embeds)
    assert (other - expected).abs().max() > 1e-3


def test_classifier_r_is_a_default_linear_layer_without_scale(tiny_clip, clip_tokenizer):
    torch.manual_seed(5)
    model = LinearClassifierModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
    torch.manual_seed(5)
    expected = torch.nn.Linear(16, 4)
    assert model.config.init == "random" and model.config.model_type == "linear-classifier"
    assert torch.equal(model.classifier.weight, expected.weight) and torch.equal(model.classifier.bias, expected.bias)
    embeds = image_embeds(1)
    with torch.no_grad():
        logits = model(image_embeds=embeds).logits
        torch.testing.assert_close(logits, expected(torch.nn.functional.normalize(embeds, dim=-1)), rtol=0, atol=0)


@pytest.mark.parametrize("build", ["classifier-r", "classifier-c", "tenc-ft"])
def test_only_the_intended_parameters_train_and_clip_is_untouched(tiny_clip, clip_tokenizer, build):
    before = clip_snapshot(tiny_clip)
    if build == "tenc-ft":
        model = TextEncoderFineTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer)
        expected = [n for n, _ in tiny_clip.named_parameters() if n.startswith(("text_model.", "text_projection."))]
    else:
        init = "text" if build == "classifier-c" else "random"
        model = LinearClassifierModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, init=init)
        expected = ["classifier.weight", "classifier.bias"]
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable == expected and list(model.prompt_state_dict()) == expected
    start = {
        name: parameter.detach().clone() for name, parameter in model.named_parameters() if parameter.requires_grad
    }
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(image_embeds=image_embeds(2), labels=torch.tensor([0, 1, 2, 3, 0, 1])).loss.backward()
    optimizer.step()
    changed = [
        name
        for name, parameter in model.named_parameters()
        if name in start and not torch.equal(parameter, start[name])
    ]
    assert "classifier.weight" in changed or "text_projection.weight" in changed
    assert_clip_unchanged(tiny_clip, before)
    assert not tiny_clip.training and not any(p.requires_grad for p in tiny_clip.parameters())


@pytest.mark.parametrize("init", ["random", "text"])
def test_classifier_round_trip_saves_the_head_only(tiny_clip_dir, tmp_path, init):
    model = LinearClassifierModel.from_clip(str(tiny_clip_dir), CLASSNAMES, init=init, template=FLOWER)
    with torch.no_grad():
        model.classifier.weight.add_(0.1 * torch.randn(4, 16, generator=torch.Generator().manual_seed(3)))
        model.classifier.bias.add_(0.5)
    model.save_pretrained(tmp_path)
    assert sorted(load_file(tmp_path / "model.safetensors")) == ["classifier.bias", "classifier.weight"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["model_type"], saved["init"], saved["template"]) == ("linear-classifier", init, FLOWER)
    embeds = image_embeds(4)
    for loader in (LinearClassifierModel, AutoModel, AutoModelForImageClassification):
        reloaded = loader.from_pretrained(tmp_path)
        assert type(reloaded) is LinearClassifierModel and reloaded.config.init == init
        with torch.no_grad():
            torch.testing.assert_close(
                reloaded(image_embeds=embeds).logits, model(image_embeds=embeds).logits, rtol=0, atol=0
            )


def test_tenc_ft_round_trip_saves_the_whole_text_encoder(tiny_clip_dir, tmp_path):
    model = TextEncoderFineTuningModel.from_clip(str(tiny_clip_dir), CLASSNAMES, template=FLOWER)
    with torch.no_grad():
        for parameter in (model.text_model.encoder.layers[0].mlp.fc1.weight, model.text_projection.weight):
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(6)))
    embeds = image_embeds(5)
    with torch.no_grad():
        logits = model(image_embeds=embeds).logits
    assert (logits - zero_shot(model.clip, model.tokenizer, FLOWER, embeds)).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    text_keys = {key for key in model.clip.state_dict() if key.startswith(("text_model.", "text_projection."))}
    assert set(saved) == text_keys  # the whole text encoder, none of the image encoder
    for loader in (TextEncoderFineTuningModel, AutoModel):
        reloaded = loader.from_pretrained(tmp_path)
        assert type(reloaded) is TextEncoderFineTuningModel and reloaded.config.template == FLOWER
        with torch.no_grad():
            torch.testing.assert_close(reloaded(image_embeds=embeds).logits, logits, rtol=0, atol=0)
        # The reloaded base CLIP keeps its own text encoder: only the copy carries the fine-tuned weights.
        assert not torch.equal(reloaded.clip.text_projection.weight, reloaded.text_projection.weight)


def test_settings_errors_name_the_flag(tiny_clip, clip_tokenizer):
    with pytest.raises(ValueError, match="--init"):
        ClassifierConfig(classnames=CLASSNAMES, init="zeros")
    with pytest.raises(ValueError, match="--template"):
        LinearClassifierModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template="a flower")
    with pytest.raises(ValueError, match="--template"):
        TextEncoderFineTuningModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template="a flower")


def test_runner_fixes_the_init_per_cli_name_and_allows_gce(tiny_clip, clip_tokenizer):
    from coop_hf.runners.methods import PROMPT_METHODS

    backbone = SimpleNamespace(clip=tiny_clip, tokenizer=clip_tokenizer)
    experiment = SimpleNamespace(backbone=backbone, classnames=CLASSNAMES, dataset="oxford_flowers")
    assert PROMPT_METHODS["classifier-r"].prompt_fields(experiment, {}) == {"init": "random", "template": FLOWER}
    assert PROMPT_METHODS["classifier-c"].prompt_fields(experiment, {}) == {"init": "text", "template": FLOWER}
    assert PROMPT_METHODS["tenc-ft"].prompt_fields(experiment, {"template": "a {}."}) == {"template": "a {}."}
    for name in ("classifier-r", "classifier-c", "tenc-ft"):
        PROMPT_METHODS[name].check_loss("gce")  # plain cross-entropy: --loss gce may replace it
    head = LinearClassifierModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, init="text")
    output = head(image_embeds=image_embeds(6), labels=torch.tensor([0, 1, 2, 3, 0, 1]))
    gce = loss_from_name("gce")(output, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert torch.isfinite(gce) and not torch.allclose(gce, output.loss)


def test_train_script_runs_classifier_c(tiny_clip_dir, tmp_path):
    results = load_example("train").main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "classifier-c", "--shots", "1", "--max_steps", "2", "--output_dir", str(tmp_path),
        "--disable_tqdm", "true", "--report_to", "none",
    ])  # fmt: skip
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert recorded["method"] == results["method"] == "classifier-c"
    assert (recorded["init"], recorded["template"]) == ("text", FLOWER) and 0 <= recorded["accuracy"] <= 100
    head = LinearClassifierModel.from_pretrained(tmp_path / "seed1")
    assert head.config.init == "text" and head.classifier.weight.shape[1] == 16

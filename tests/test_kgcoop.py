"""KgCoOp: CoOp's cross-entropy plus kg_weight * (1 - mean cosine to the hand-crafted prompt's text features), exactly
as the reference code computes it; only the context trains and is saved."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel

from coop_hf import KgCoOpConfig, KgCoOpModel
from coop_hf.methods.kgcoop import KGCOOP_TEMPLATES
from coop_hf.text_encoding import encode_plain
from tests.conftest import DATA, load_example, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

CLASSNAMES = ["cat", "golden retriever", "st. john's wort", "sunflower"]
FLOWER = "a photo of a {}, a type of flower."

# The reference's CUSTOM_TEMPLATES (htyao89/KgCoOp@c43ccc3, KgCoOp/trainers/kgcoop.py:37-54) by Dassl dataset name,
# and the coop-hf benchmark name of each dataset.
REFERENCE_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
BENCHMARK_NAMES = {
    "OxfordPets": "oxford_pets", "OxfordFlowers": "oxford_flowers", "FGVCAircraft": "fgvc_aircraft",
    "DescribableTextures": "dtd", "EuroSAT": "eurosat", "StanfordCars": "stanford_cars", "Food101": "food101",
    "SUN397": "sun397", "Caltech101": "caltech101", "UCF101": "ucf101", "ImageNet": "imagenet",
    "ImageNetSketch": "imagenet_sketch", "ImageNetV2": "imagenet_v2", "ImageNetA": "imagenet_a",
    "ImageNetR": "imagenet_r",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


def reference_loss(clip, tokenizer, ctx, template, weight, image_embeds, labels):
    """The reference's KgCoOp loss, computed here without coop-hf's prompt learner: prompts "a photo of a <c>."
    (77 tokens) with the context written over positions 1..4 as [prefix, ctx, suffix], the text encoder taken at
    the end-of-text token, and the hand-crafted features from CLIP on the template."""
    ids = tokenizer([f"a photo of a {name}." for name in CLASSNAMES], padding="max_length", max_length=77)
    ids = torch.tensor(ids["input_ids"])
    embeds = clip.text_model.embeddings.token_embedding(ids)
    n_ctx = ctx.shape[0]
    prompts = torch.cat([embeds[:, :1], ctx.expand(len(CLASSNAMES), -1, -1), embeds[:, 1 + n_ctx :]], dim=1)
    text = encode_plain(clip, prompts, ids.argmax(dim=-1))
    old = tokenizer([template.format(name) for name in CLASSNAMES], padding=True, return_tensors="pt")
    old = clip.get_text_features(**old).pooler_output
    old = old / old.norm(dim=-1, keepdim=True)
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = clip.logit_scale.exp() * image @ text.t()
    score = 1.0 - torch.mean(torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text, old / old.norm(dim=-1, keepdim=True)))
    return F.cross_entropy(logits, labels) + weight * score, score


def test_defaults_are_the_reference_recipe():
    config = KgCoOpConfig(classnames=CLASSNAMES)
    assert config.model_type == "kgcoop"
    assert (config.n_ctx, config.ctx_init, config.kg_weight) == (4, "a photo of a", 8.0)
    assert config.template == "a photo of a {}."  # without a dataset
    assert KgCoOpConfig.prompt_settings() == (
        "n_ctx", "ctx_init", "class_token_position", "class_specific_context", "kg_weight", "template",
    )  # fmt: skip


def test_template_table_is_the_reference_table():
    ours = {name: KgCoOpConfig.dataset_settings(BENCHMARK_NAMES[name])["template"] for name in REFERENCE_TEMPLATES}
    assert ours == REFERENCE_TEMPLATES
    assert set(KGCOOP_TEMPLATES) == set(BENCHMARK_NAMES.values())
    assert KgCoOpConfig.dataset_settings("some/hub-dataset") == {"template": "a photo of a {}."}


@pytest.mark.parametrize("template, weight", [(FLOWER, 8.0), ("a photo of a {}.", 3.0)])
def test_loss_equals_the_reference_formula(tiny_clip, clip_tokenizer, template, weight):
    model = KgCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=template, kg_weight=weight)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.05 * torch.randn(4, 32, generator=torch.Generator().manual_seed(0)))
    image_embeds = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    output = model(image_embeds=image_embeds, labels=labels)
    with torch.no_grad():
        expected, score = reference_loss(
            tiny_clip, clip_tokenizer, model.prompt_learner.ctx, template, weight, image_embeds, labels
        )
    assert score > 1e-3  # the regulariser is really part of the comparison
    assert_close_fp32(output.loss, expected, depth=stages(2))
    # On the same text features the loss is the formula itself.
    text = output.text_embeds
    score_here = 1 - F.cosine_similarity(text, model.handcrafted_text_embeds, dim=1, eps=1e-7).mean()
    assert_close_fp32(output.loss, F.cross_entropy(output.logits, labels) + weight * score_here, depth=stages(0))


def test_score_is_zero_at_init_when_the_template_is_the_initial_prompt(tiny_clip, clip_tokenizer):
    photo = KgCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template="a photo of a {}.")
    pets = KgCoOpModel.from_clip(
        tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=KGCOOP_TEMPLATES["oxford_pets"]
    )
    with torch.no_grad():
        # The cosine of equal features is 1 up to the rounding of one dot product (the features' own rounding enters
        # only to second order: the cosine is at its maximum).
        assert abs(photo.knowledge_guided_score(F.normalize(photo.get_text_features(), dim=-1))) <= fp32_tolerance(1)
        assert pets.knowledge_guided_score(F.normalize(pets.get_text_features(), dim=-1)) > 1e-3


def test_vit_b32_score_is_zero_at_init_and_positive_for_another_template(vit_b32_clip, clip_tokenizer):
    names = CLASSNAMES[:3]
    photo = KgCoOpModel.from_clip(vit_b32_clip, names, tokenizer=clip_tokenizer)
    flower = KgCoOpModel.from_clip(vit_b32_clip, names, tokenizer=clip_tokenizer, template=FLOWER)
    with torch.no_grad():
        assert abs(photo.knowledge_guided_score(F.normalize(photo.get_text_features(), dim=-1))) <= fp32_tolerance(1)
        assert flower.knowledge_guided_score(F.normalize(flower.get_text_features(), dim=-1)) > 1e-4


def test_only_the_context_trains_and_is_saved(tiny_clip_dir, tmp_path):
    model = KgCoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, template=FLOWER)
    model.train()
    model(image_embeds=torch.randn(3, 16), labels=torch.tensor([0, 1, 2])).loss.backward()
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    assert [key for key in model.state_dict() if not key.startswith("clip.")] == ["prompt_learner.ctx"]
    model.save_pretrained(tmp_path)
    assert list(load_file(tmp_path / "model.safetensors")) == ["prompt_learner.ctx"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["model_type"], saved["kg_weight"], saved["template"]) == ("kgcoop", 8.0, FLOWER)


def test_round_trip_recomputes_the_handcrafted_features(tiny_clip_dir, tmp_path):
    model = KgCoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, template=FLOWER, kg_weight=2.5)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(2))
    model.save_pretrained(tmp_path)
    for reloaded in (KgCoOpModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(reloaded) is KgCoOpModel and reloaded.config.kg_weight == 2.5
        torch.testing.assert_close(reloaded.handcrafted_text_embeds, model.handcrafted_text_embeds, rtol=0, atol=0)
        inputs = dict(
            image_embeds=torch.randn(4, 16, generator=torch.Generator().manual_seed(3)), labels=torch.arange(4)
        )
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs).loss, model(**inputs).loss, rtol=0, atol=0)


def test_set_classnames_moves_the_handcrafted_features(tiny_clip, clip_tokenizer):
    model = KgCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)
    new = ["rose", "daisy"]
    model.set_classnames(new)
    fresh = KgCoOpModel.from_clip(tiny_clip, new, tokenizer=clip_tokenizer, template=FLOWER)
    torch.testing.assert_close(model.handcrafted_text_embeds, fresh.handcrafted_text_embeds, rtol=0, atol=0)
    assert model(image_embeds=torch.randn(2, 16), labels=torch.tensor([0, 1])).logits.shape == (2, 2)


def test_settings_errors_name_the_flag(tiny_clip, clip_tokenizer):
    with pytest.raises(ValueError, match="--n_ctx"):
        KgCoOpModel.build_config(tiny_clip, CLASSNAMES, clip_tokenizer, n_ctx=16)
    with pytest.raises(ValueError, match="--template"):
        KgCoOpConfig(classnames=CLASSNAMES, template="a photo of a flower.")
    with pytest.raises(ValueError, match="--kg_weight"):
        KgCoOpConfig(classnames=CLASSNAMES, kg_weight=-1.0)
    with pytest.raises(ValueError, match="--ctx_init ''"):
        KgCoOpConfig(classnames=CLASSNAMES, class_specific_context=True)
    random_start = KgCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="", n_ctx=16)
    assert random_start.config.ctx_init is None and random_start.prompt_learner.ctx.shape == (16, 32)


def test_model_card_lists_the_method_and_its_settings(tiny_clip, clip_tokenizer):
    model = KgCoOpModel.from_clip(tiny_clip, CLASSNAMES, tokenizer=clip_tokenizer, template=FLOWER)
    info = model.card_info()
    assert info.method_name == "KgCoOp" and info.paper[1] == "https://arxiv.org/abs/2303.13283"
    rows = dict(info.settings)
    assert rows["knowledge-guided weight λ (`kg_weight`)"] == "8"
    assert rows["hand-crafted prompt (`template`)"] == f'"{FLOWER}"'


def test_runner_defaults_the_template_to_the_datasets(tiny_clip, clip_tokenizer):
    from coop_hf.runners.methods import PROMPT_METHODS

    backbone = SimpleNamespace(clip=tiny_clip, tokenizer=clip_tokenizer)
    experiment = SimpleNamespace(backbone=backbone, classnames=CLASSNAMES, dataset="dtd")
    kgcoop = PROMPT_METHODS["kgcoop"]
    assert kgcoop.prompt_fields(experiment, {})["template"] == "a photo of a {}, a type of texture."
    assert kgcoop.prompt_fields(experiment, {"template": "a {}."})["template"] == "a {}."


@pytest.mark.slow
def test_train_script_runs_kgcoop_and_records_its_settings(tiny_clip_dir, tmp_path):
    results = load_example("train").main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--method", "kgcoop", "--shots", "1", "--max_steps", "2", "--output_dir", str(tmp_path),
        "--disable_tqdm", "true", "--report_to", "none", "--template", FLOWER,
    ])  # fmt: skip
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert recorded["method"] == results["method"] == "kgcoop"
    assert (recorded["kg_weight"], recorded["template"], recorded["n_ctx"]) == (8.0, FLOWER, 4)
    assert recorded["ctx_init"] == "a photo of a" and 0 <= recorded["accuracy"] <= 100
    prompt = KgCoOpModel.from_pretrained(tmp_path / "seed1")
    assert prompt.config.template == FLOWER


def test_another_loss_cannot_silently_replace_kgcoops_own():
    from coop_hf.runners.methods import PROMPT_METHODS

    with pytest.raises(ValueError, match="--loss gce would replace KgCoOp's own loss"):
        PROMPT_METHODS["kgcoop"].check_loss("gce")
    PROMPT_METHODS["coop"].check_loss("gce")  # CoOp's loss is plain cross-entropy: GCE may replace it

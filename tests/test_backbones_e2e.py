"""The few-shot protocol end to end on MetaCLIP 2, SigLIP and SigLIP 2 checkpoints (tiny, random weights, saved to
folders as a user would have them), on the real mini Flowers102."""

import json

import pytest
import torch
from tiny_backbones import tiny_backbone
from transformers import CLIPImageProcessor, pipeline
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

from coop_hf import CoOpModel
from coop_hf.backbones import family_name
from coop_hf.runners import Experiment, LoadedBackbone
from coop_hf.runners.evaluation import evaluate_prompt
from tests.conftest import DATA
from tests.test_train_e2e import flags, run_in_process

PROCESSORS = {
    "metaclip_2": lambda: CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
    "siglip": lambda: SiglipImageProcessorPil(size={"height": 64, "width": 64}),
    "siglip2": lambda: Siglip2ImageProcessorPil(patch_size=16, max_num_patches=16),  # 4 x 4 patches: 64 px
}


@pytest.fixture(scope="module", params=sorted(PROCESSORS))
def checkpoint(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    model, tokenizer = tiny_backbone(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    PROCESSORS[family]().save_pretrained(folder)
    return family, folder


@pytest.mark.slow
def test_coop_trains_evaluates_saves_and_reloads_on_every_family(checkpoint, tmp_path):
    family, folder = checkpoint
    results = run_in_process(flags(folder, tmp_path))
    assert results["model_name_or_path"] == str(folder) and results["method"] == "coop"
    assert 0 <= results["accuracy"] <= 100 and 0 <= results["zeroshot_accuracy"] <= 100
    prompt_dir = tmp_path / "seed1"
    config = json.loads((prompt_dir / "config.json").read_text())
    assert config["backbone_family"] == results["backbone_family"] == family
    name = family_name(family)  # the card compares with the family's own zero-shot model
    assert f"| Zero-shot {name} | {results['zeroshot_accuracy']:.2f} |" in (prompt_dir / "README.md").read_text()

    backbone = LoadedBackbone.load(str(folder))
    experiment = Experiment(backbone, "oxford_flowers", str(DATA))
    model = CoOpModel.from_pretrained(prompt_dir, clip_model=backbone.clip, tokenizer=backbone.tokenizer)
    assert evaluate_prompt(model, experiment)["accuracy"] == pytest.approx(results["accuracy"])

    # The saved folder is all a pipeline needs; its image processor gives the backbone's pixels.
    classifier = pipeline("image-classification", model=str(prompt_dir), model_kwargs={"clip_model": backbone.clip})
    image = experiment.splits["test"][0]["image"]
    top = classifier(image, top_k=1)[0]
    with torch.no_grad():
        pixels = classifier.image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        expected = model(pixel_values=pixels).logits.softmax(-1)[0]
    assert pixels.shape[-2:] == (64, 64)
    assert top["label"] == model.config.id2label[int(expected.argmax())]


@pytest.mark.slow
def test_baselines_run_on_every_family(checkpoint, tmp_path):
    _, folder = checkpoint
    zeroshot = run_in_process(flags(folder, tmp_path / "zs", "--method", "zeroshot"))
    probe = run_in_process(flags(folder, tmp_path / "lp", "--method", "linear-probe"))
    assert 0 <= zeroshot["accuracy"] <= 100 and 0 <= probe["accuracy"] <= 100
    assert probe["zeroshot_accuracy"] == zeroshot["accuracy"]

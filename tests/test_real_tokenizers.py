"""Every family with its real tokenizer class (`coop_hf.testing.tiny_tokenizer`, reloaded through `AutoTokenizer`)
and its processor: an untrained "a photo of a" CoOp is transformers' own zero-shot classifier, i.e. equals
`pipeline("zero-shot-image-classification")` and the backbone's forward on its processor's outputs, on the same
images and class names. The context and class tokens go where the tokenizer puts them (SigLIP 2 pads on the left),
the padding is attended or not as the tokenizer's attention mask says, and NaFlex takes its processor's patches."""

import pytest
import torch
from PIL import Image
from tiny_backbones import CLASSNAMES, tiny_backbone
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    Siglip2ImageProcessor,
    Siglip2Tokenizer,
    SiglipImageProcessor,
    SiglipTokenizer,
    XLMRobertaTokenizer,
    pipeline,
)

from coop_hf import CoOpModel
from tests.conftest import DATA

TEMPLATE = "a photo of a {}."
TOKENIZER_CLASS = {"metaclip_2": XLMRobertaTokenizer, "siglip": SiglipTokenizer, "siglip2": Siglip2Tokenizer}
PROCESSOR = {
    "metaclip_2": lambda: CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=64),
    "siglip": lambda: SiglipImageProcessor(size={"height": 64, "width": 64}),
    "siglip2": lambda: Siglip2ImageProcessor(patch_size=16, max_num_patches=16),
}


@pytest.fixture(scope="module", params=list(TOKENIZER_CLASS))
def checkpoint(request, tmp_path_factory):
    """(family, folder) of a saved tiny checkpoint: model, real tokenizer and processor, as on the Hub."""
    family = request.param
    model, tokenizer = tiny_backbone(family)
    folder = tmp_path_factory.mktemp(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    PROCESSOR[family]().save_pretrained(folder)
    return family, folder


def images():
    """Two real images of different aspect ratios (NaFlex keeps each one's)."""
    paths = sorted((DATA / "oxford_flowers" / "jpg").glob("*.jpg"))[:2]
    return [Image.open(path).convert("RGB") for path in paths]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def test_the_real_tokenizer_class_loads(checkpoint):
    family, folder = checkpoint
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer) is TOKENIZER_CLASS[family]
    assert tokenizer.padding_side == ("left" if family == "siglip2" else "right")


def test_untrained_coop_is_the_backbones_own_zero_shot_classifier(checkpoint):
    family, folder = checkpoint
    processor, tokenizer = AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    pixels = processor(images=images(), return_tensors="pt")
    padding = {"padding": "max_length", "max_length": 64} if family.startswith("siglip") else {"padding": True}
    texts = tokenizer([TEMPLATE.format(name) for name in CLASSNAMES], return_tensors="pt", **padding)
    coop = CoOpModel.from_clip(str(folder), CLASSNAMES, ctx_init="a photo of a")
    with torch.no_grad():
        expected = classifier.model(**texts, **pixels).logits_per_image
        logits = coop(**pixels).logits  # NaFlex: the processor's patches, mask and grid shapes
    assert relative_error(logits, expected) < 1e-5
    for image, image_logits in zip(images(), logits, strict=True):
        scores = {
            entry["label"]: entry["score"] for entry in classifier(image, CLASSNAMES, hypothesis_template=TEMPLATE)
        }
        probabilities = image_logits.sigmoid() if family.startswith("siglip") else image_logits.softmax(-1)
        assert [scores[name] for name in CLASSNAMES] == pytest.approx(probabilities.tolist(), rel=1e-5, abs=1e-7)


def test_context_and_class_tokens_sit_where_the_tokenizer_puts_them(checkpoint):
    family, folder = checkpoint
    tokenizer = AutoTokenizer.from_pretrained(folder)
    coop = CoOpModel.from_clip(str(folder), CLASSNAMES, ctx_init="a photo of a")
    learner = coop.prompt_learner
    padding = {"padding": "max_length", "max_length": 64} if family.startswith("siglip") else {"padding": True}
    texts = tokenizer([TEMPLATE.format(name) for name in CLASSNAMES], return_tensors="pt", **padding)
    width = learner.input_ids.shape[1]
    assert torch.equal(
        learner.input_ids, texts["input_ids"][:, -width:] if family == "siglip2" else texts["input_ids"][:, :width]
    )
    if family.startswith("siglip"):  # the padding is masked as the tokenizer masks it
        assert torch.equal(learner.attention_mask, texts["attention_mask"])
    if family == "siglip2":  # left padding: the context ends each prompt's phrase, the end-of-text token is last
        lengths = texts["attention_mask"].sum(1)
        assert torch.equal(learner.context_positions[:, 0], width - lengths)
        assert (learner.input_ids[:, -1] == tokenizer.eos_token_id).all()


def test_naflex_patches_need_their_mask_and_other_families_refuse_them(checkpoint):
    family, folder = checkpoint
    coop = CoOpModel.from_clip(str(folder), CLASSNAMES)
    if family == "siglip2":
        pixels = AutoImageProcessor.from_pretrained(folder)(images=images(), return_tensors="pt")
        with pytest.raises(ValueError, match="pixel_attention_mask and spatial_shapes"):
            coop(pixel_values=pixels["pixel_values"])
    else:
        with pytest.raises(ValueError, match="not pixel_attention_mask, spatial_shapes"):
            coop(
                pixel_values=torch.randn(1, 3, 64, 64),
                pixel_attention_mask=torch.ones(1, 4),
                spatial_shapes=torch.ones(1, 2),
            )

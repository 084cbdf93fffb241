"""CoOp image transforms and load_rgb: processor equivalence, augmentation, colour modes, corrupt files."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from coop_hf.data import (
    CoOpTransform,
    UnreadableImageError,
    load_benchmark,
    load_rgb,
    random_resized_crop_box,
    with_coop_transform,
)
from tests.conftest import SHARED, VIT_B32


@pytest.fixture(scope="module")
def processor() -> CLIPImageProcessor:
    return CLIPImageProcessor.from_pretrained(VIT_B32)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> list[str]:
    """Images whose sizes exercise odd crop offsets, portrait/landscape, up- and down-scaling."""
    folder = tmp_path_factory.mktemp("odd")
    paths = []
    sizes = [(301, 227), (227, 301), (500, 375), (100, 80), (224, 224), (640, 231)]
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index}.png"
        _noise(width, height, seed=index).save(path)
        paths.append(str(path))
    return paths


def test_test_transform_equals_clip_image_processor(processor, odd_images):
    originals = [Image.open(path) for path in odd_images]
    reference = processor(images=originals, return_tensors="pt")["pixel_values"]
    out = CoOpTransform(processor, train=False)({"image": odd_images, "label": list(range(len(odd_images)))})
    assert out["pixel_values"].shape == reference.shape == (len(odd_images), 3, 224, 224)
    torch.testing.assert_close(out["pixel_values"], reference, atol=1e-6, rtol=0)
    assert out["labels"].dtype == torch.long and out["labels"].tolist() == list(range(len(odd_images)))


def test_test_transform_equals_processor_on_real_jpegs(processor):
    test = load_benchmark("oxford_flowers", SHARED / "data")["test"].select(range(0, 1020, 170))
    reference = processor(images=list(test["image"]), return_tensors="pt")["pixel_values"]
    out = with_coop_transform(test, processor, train=False)[:]
    torch.testing.assert_close(out["pixel_values"], reference, atol=1e-6, rtol=0)
    assert out["labels"].tolist() == list(test["label"])


def test_train_transform_shape_dtype_normalisation_and_seeding(processor, odd_images):
    transform = CoOpTransform(processor, train=True)
    batch = {"image": odd_images, "label": [0, 1, 2, 3, 4, 5]}
    torch.manual_seed(0)
    first = transform(batch)["pixel_values"]
    torch.manual_seed(0)
    again = transform(batch)["pixel_values"]
    other = transform(batch)["pixel_values"]
    assert first.shape == (6, 3, 224, 224) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    pixels = first * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert abs(pixels.mean().item() - 0.5) < 0.05  # uniform noise in, so mean ~0.5 after un-normalising


def test_train_geometry_is_crop_resize_flip(processor):
    transform = CoOpTransform(processor, train=True)
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1))).convert("RGB")
    flips = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = np.asarray(transform.train_geometry(gradient))[:, :, 0].astype(int)
        assert out.shape == (224, 224)
        flips += out[:, 0].mean() > out[:, -1].mean()
    assert 3 <= flips <= 17  # a horizontal flip with p=0.5


def test_random_resized_crop_box_follows_torchvision_sampling():
    torch.manual_seed(3)
    box = random_resized_crop_box(300, 200)
    torch.manual_seed(3)
    area = 300 * 200 * torch.empty(1).uniform_(0.08, 1.0).item()
    log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3)))
    aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    width, height = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
    assert width <= 300 and height <= 200  # the first attempt fits for this seed
    top = torch.randint(0, 200 - height + 1, size=(1,)).item()
    left = torch.randint(0, 300 - width + 1, size=(1,)).item()
    assert box == (top, left, height, width)


def test_random_resized_crop_box_fallback_is_a_ratio_clamped_centre_crop():
    assert random_resized_crop_box(1000, 100, scale=(5.0, 6.0)) == (0, 433, 100, 133)
    assert random_resized_crop_box(100, 1000, scale=(5.0, 6.0)) == (433, 0, 133, 100)
    assert random_resized_crop_box(120, 100, scale=(5.0, 6.0)) == (0, 0, 100, 120)
    for seed in range(50):
        torch.manual_seed(seed)
        top, left, height, width = random_resized_crop_box(37, 53)
        assert 0 <= top <= 53 - height and 0 <= left <= 37 - width and height > 0 and width > 0


def _save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def test_load_rgb_converts_colour_modes(tmp_path):
    gray = _save(Image.new("L", (5, 4), 77), tmp_path / "gray.png")
    cmyk = _save(Image.new("CMYK", (5, 4), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    rgba = Image.new("RGBA", (5, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))
    rgba_path = _save(rgba, tmp_path / "rgba.png")
    la = _save(Image.new("LA", (5, 4), (0, 0)), tmp_path / "la.png")
    palette = Image.new("P", (5, 4), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.putpixel((1, 1), 0)
    palette_path = _save(palette, tmp_path / "p.png", transparency=0)
    deep = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    deep_path = _save(deep, tmp_path / "deep.png")
    assert Image.open(deep_path).mode.startswith("I")

    for path in (gray, cmyk, rgba_path, la, palette_path, deep_path):
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (5, 4), path
    assert load_rgb(gray).getpixel((0, 0)) == (77, 77, 77)
    red = load_rgb(cmyk).getpixel((0, 0))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert load_rgb(rgba_path).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_rgb(rgba_path).getpixel((1, 0)) == (255, 0, 0)
    assert load_rgb(la).getpixel((2, 2)) == (255, 255, 255)
    assert load_rgb(palette_path).getpixel((1, 1)) == (255, 255, 255)
    assert load_rgb(palette_path).getpixel((0, 0)) == (0, 200, 0)
    assert load_rgb(deep_path).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 5), 32896, dtype=np.uint16))
    assert load_rgb(half).getpixel((0, 0)) == (128, 128, 128)


def test_load_rgb_accepts_pil_path_and_datasets_dicts(tmp_path):
    path = _save(_noise(6, 5), tmp_path / "x.png")
    expected = np.asarray(Image.open(path).convert("RGB"))
    for source in (path, Path(path), Image.open(path), {"path": path, "bytes": None}):
        assert np.array_equal(np.asarray(load_rgb(source)), expected)
    assert np.array_equal(np.asarray(load_rgb({"path": None, "bytes": Path(path).read_bytes()})), expected)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    full = tmp_path / "full.jpg"
    _noise(64, 64).save(full, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:600])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    for path in (truncated, garbage):
        with pytest.raises(UnreadableImageError, match=f"Cannot read image {path}"):
            load_rgb(str(path))
        with pytest.raises(UnreadableImageError, match=str(path)):
            load_rgb({"path": str(path), "bytes": None})
    with pytest.raises(UnreadableImageError, match="does-not-exist.png"):
        load_rgb(tmp_path / "does-not-exist.png")


def test_transform_on_dataset_reports_the_corrupt_file(processor, tmp_path):
    good = _save(_noise(40, 30), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    dataset = datasets.Dataset.from_dict({"image": [good, str(bad)], "label": [0, 0]}, features=features)
    transformed = with_coop_transform(dataset, processor, train=True)
    assert transformed[0]["pixel_values"].shape == (3, 224, 224)
    with pytest.raises(UnreadableImageError, match="bad.png"):
        transformed[1]

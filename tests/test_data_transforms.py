"""CoOp image transforms and load_rgb: the reference test crops, augmentation, colour modes, corrupt files."""

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

from coop_hf.data import (
    CoOpTransform,
    UnreadableImageError,
    load_benchmark,
    load_rgb,
    random_resized_crop_box,
    with_coop_transform,
)
from coop_hf.data.transforms import center_crop_offset
from tests.conftest import DATA, VIT_B32
from tests.tolerances import assert_close_fp32

REFERENCE_CROPS = json.loads((Path(__file__).parent / "fixtures" / "reference_test_crops.json").read_text())["crops"]
SPLIT_FILES = [
    ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)  # openai/CLIP's, as CoOp's configs
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


@pytest.fixture(scope="module")
def processor() -> CLIPImageProcessorPil:
    """The PIL processor, whose resize is the reference's (Dassl resizes PIL images); where torchvision is installed,
    `CLIPImageProcessor` is its torchvision backend, which resizes otherwise."""
    return CLIPImageProcessorPil.from_pretrained(VIT_B32)


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


def _sha256(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def _split_images(split: str) -> list[str]:
    """Paths, relative to shared/data, of the images of ``split`` in the split_zhou files of the shared data."""
    paths = []
    for folder, image_dir, split_file in SPLIT_FILES:
        rows = json.loads((DATA / folder / split_file).read_text())[split]
        paths += [f"{folder}/{image_dir}/{row[0]}" for row in rows]
    return paths


def test_reference_crops_cover_every_listed_image():
    listed = [path for split in ("train", "val", "test") for path in _split_images(split)]
    assert len(listed) == 6834 and set(listed) == set(REFERENCE_CROPS)


@pytest.mark.parametrize(
    "split", ["test", pytest.param("val", marks=pytest.mark.slow), pytest.param("train", marks=pytest.mark.slow)]
)
def test_test_geometry_is_pixel_identical_to_the_reference(processor, split):
    """Pinned from torchvision's Resize(224, BICUBIC) + CenterCrop(224), see tests/fixtures."""
    transform = CoOpTransform(processor, train=False)
    paths = _split_images(split)
    mismatched = [
        path for path in paths if _sha256(transform.test_geometry(load_rgb(DATA / path))) != REFERENCE_CROPS[path]
    ]
    assert not mismatched, f"{len(mismatched)} of {len(paths)} {split} images differ, e.g. {mismatched[:3]}"


def test_test_transform_normalises_the_reference_crop(processor):
    test = load_benchmark("oxford_flowers", DATA)["test"].select(range(0, 1020, 170))
    out = with_coop_transform(test, processor, train=False)[:]
    transform = CoOpTransform(processor, train=False)
    files = test.cast_column("image", datasets.Image(decode=False))["image"]
    assert len(files) == len(out["pixel_values"]) == 6
    for pixel_values, file in zip(out["pixel_values"], files, strict=True):
        crop = transform.test_geometry(load_rgb(file["path"]))
        assert _sha256(crop) == REFERENCE_CROPS[Path(file["path"]).relative_to(DATA).as_posix()]
        expected = (torch.from_numpy(np.array(crop)).permute(2, 0, 1) / 255.0 - CLIP_MEAN) / CLIP_STD
        assert_close_fp32(pixel_values, expected, depth=1)  # elementwise: rescale, subtract, divide
    assert out["labels"].tolist() == list(test["label"])


def test_centre_crop_offset_rounds_half_to_even():
    offsets = [center_crop_offset(size, 224) for size in range(220, 232)]
    assert offsets == [-2, -1, -1, 0, 0, 0, 1, 2, 2, 2, 3, 4]  # below 224 the side is padded, the extra pixel after


@pytest.mark.parametrize("size, resized_size, long_axis", [((454, 448), (227, 224), 1), ((448, 454), (224, 227), 0)])
def test_test_geometry_crop_rounds_half_to_even(processor, size, resized_size, long_axis):
    """The shorter side goes to 224 and the longer to 227: the offset is round(1.5) = 2, not 3 // 2 = 1."""
    image = _noise(*size)
    resized = np.asarray(image.resize(resized_size, Image.Resampling.BICUBIC))
    out = np.asarray(CoOpTransform(processor, train=False).test_geometry(image))
    assert np.array_equal(out, resized.take(range(2, 226), axis=long_axis))
    assert not np.array_equal(out, resized.take(range(1, 225), axis=long_axis))


def test_test_transform_is_the_processor_but_for_its_floored_crop(processor, tmp_path):
    """``CLIPImageProcessor`` resizes and normalises as the reference but floors the crop offset: the outputs are
    equal where (resized long side - 224) is not 3 mod 4, and one pixel apart where it is."""
    sizes = [(301, 227), (227, 301), (500, 375), (100, 80), (224, 224), (640, 231), (227, 224), (83, 96)]
    paths = [
        _save(_noise(width, height, seed), tmp_path / f"{seed}.png") for seed, (width, height) in enumerate(sizes)
    ]
    reference = processor(images=[Image.open(path) for path in paths], return_tensors="pt")["pixel_values"]
    out = CoOpTransform(processor, train=False)({"image": paths, "label": list(range(len(paths)))})
    assert out["pixel_values"].shape == reference.shape == (len(paths), 3, 224, 224)
    assert out["labels"].dtype == torch.long and out["labels"].tolist() == list(range(len(paths)))
    shifted = 0
    for ours, theirs, (width, height) in zip(out["pixel_values"], reference, sizes, strict=True):
        long_side = int(224 * max(width, height) / min(width, height))
        if (long_side - 224) % 4 != 3:
            assert_close_fp32(ours, theirs, depth=1)
        elif width > height:
            assert_close_fp32(ours[:, :, :-1], theirs[:, :, 1:], depth=1)
            shifted += 1
        else:
            assert_close_fp32(ours[:, :-1], theirs[:, 1:], depth=1)
            shifted += 1
    assert shifted == 2


def test_fixed_size_processors_resize_then_crop():
    image = _noise(300, 200)
    resize_only = CLIPImageProcessor.from_pretrained(VIT_B32, size={"height": 224, "width": 224}, do_center_crop=False)
    out = np.asarray(CoOpTransform(resize_only, train=False).test_geometry(image))
    assert np.array_equal(out, np.asarray(image.resize((224, 224), Image.Resampling.BICUBIC)))
    resize_and_crop = CLIPImageProcessor.from_pretrained(VIT_B32, size={"height": 240, "width": 231})
    out = np.asarray(CoOpTransform(resize_and_crop, train=False).test_geometry(image))
    resized = np.asarray(image.resize((231, 240), Image.Resampling.BICUBIC))
    assert np.array_equal(out, resized[8:232, 4:228])  # offsets 16 / 2 and round(7 / 2) = 4


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


def test_seeded_views_depend_on_seed_epoch_and_image_only(processor, odd_images):
    """With a seed, an image's view is a function of (seed, epoch, its index): the same in any batch or order (so
    in any process), another in the next epoch."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    dataset = datasets.Dataset.from_dict({"image": odd_images, "label": [0, 1] * (len(odd_images) // 2)}, features)
    train = with_coop_transform(dataset, processor, train=True, seed=3)
    whole = train[:]["pixel_values"]
    torch.manual_seed(123)  # the global RNG plays no part
    reversed_pairs = torch.stack([train[index]["pixel_values"] for index in reversed(range(len(train)))]).flip(0)
    assert torch.equal(whole, reversed_pairs)
    train.coop_transform.epoch = 1
    assert not torch.equal(train[:]["pixel_values"], whole)
    train.coop_transform.epoch = 0
    assert torch.equal(train[:]["pixel_values"], whole)
    assert not torch.equal(with_coop_transform(dataset, processor, train=True, seed=4)[:]["pixel_values"], whole)


def test_the_trainer_moves_a_seeded_transform_to_each_epoch(tiny_clip_dir, tmp_path, odd_images):
    from coop_hf import CoOpModel
    from coop_hf.training import CoOpTrainer, CoOpTrainingArguments

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    dataset = datasets.Dataset.from_dict({"image": odd_images, "label": [0, 1] * (len(odd_images) // 2)}, features)
    train = with_coop_transform(dataset, CLIPImageProcessor.from_pretrained(VIT_B32), train=True, seed=1)
    seen = []
    call = train.coop_transform.__call__
    train.coop_transform.__class__ = type("Recording", (type(train.coop_transform),), {
        "__call__": lambda self, batch: seen.append(self.epoch) or call(batch)
    })  # fmt: skip
    model = CoOpModel.from_clip(str(tiny_clip_dir), ["a", "b"], n_ctx=2)
    args = CoOpTrainingArguments(str(tmp_path), num_train_epochs=2, per_device_train_batch_size=2, disable_tqdm=True)
    CoOpTrainer(model=model, args=args, train_dataset=train).train()
    assert sorted(set(seen)) == [0, 1]

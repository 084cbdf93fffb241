"""Cached image features: the same loss as encoding the same augmented pixels, and reused from disk."""

from unittest import mock

import datasets
import pytest
import torch
from transformers import AutoImageProcessor

from coop_hf import CoOpModel
from coop_hf.data import CoOpTransform
from coop_hf.feature_cache import AugmentedViews, encode_images, feature_cache_key
from tests.conftest import DATA, VIT_B32, random_clip, tiny_clip_config
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
IMAGES = ["image_06749.jpg", "image_06758.jpg", "image_05099.jpg", "image_05122.jpg", "image_06622.jpg"]


@pytest.fixture(scope="module")
def flowers() -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES)})
    paths = [str(DATA / "oxford_flowers" / "jpg" / name) for name in IMAGES]
    return datasets.Dataset.from_dict({"image": paths, "label": [0, 0, 1, 1, 2]}, features=features)


@pytest.fixture(scope="module")
def processor():
    return AutoImageProcessor.from_pretrained(VIT_B32)


@pytest.fixture()
def model(clip_tokenizer) -> CoOpModel:
    return CoOpModel.from_clip(random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=4)


def count_encoder_calls(monkeypatch, clip) -> mock.Mock:
    counter = mock.Mock(wraps=clip.get_image_features)
    monkeypatch.setattr(clip, "get_image_features", counter)
    return counter


def test_cached_features_give_the_same_loss_as_the_same_augmented_pixels(model, flowers, processor, tmp_path):
    transform = CoOpTransform(processor, train=True)
    views = AugmentedViews(flowers, transform, num_views=2, seed=3)
    items = [views[item] for item in range(len(views))]
    pixel_values = torch.stack([item["pixel_values"] for item in items])
    labels = torch.tensor([item["labels"] for item in items])
    assert not torch.equal(pixel_values[: len(flowers)], pixel_values[len(flowers) :])  # two different views

    dataset = encode_images(model.clip, flowers, transform, num_views=2, seed=3, batch_size=3, cache_dir=tmp_path)
    assert dataset.column_names == ["image_embeds", "labels", "view", "index"]
    cached = dataset[:]
    assert cached["image_embeds"].dtype == torch.float32 and cached["image_embeds"].shape == (10, 16)
    assert cached["view"].tolist() == [0] * 5 + [1] * 5 and cached["index"].tolist() == list(range(5)) * 2
    torch.testing.assert_close(cached["labels"], labels, rtol=0, atol=0)

    model.train()
    from_pixels = model(pixel_values=pixel_values, labels=labels).loss
    from_cache = model(image_embeds=cached["image_embeds"], labels=cached["labels"]).loss
    assert_close_fp32(from_cache, from_pixels, depth=stages(2))


def test_second_call_loads_from_disk_without_encoding(model, flowers, processor, tmp_path, monkeypatch):
    transform = CoOpTransform(processor, train=True)
    encoder = count_encoder_calls(monkeypatch, model.clip)
    first = encode_images(model.clip, flowers, transform, num_views=2, seed=0, batch_size=4, cache_dir=tmp_path)
    assert encoder.call_count == 3  # 10 views in batches of 4
    second = encode_images(model.clip, flowers, transform, num_views=2, seed=0, batch_size=4, cache_dir=tmp_path)
    assert encoder.call_count == 3
    torch.testing.assert_close(second[:]["image_embeds"], first[:]["image_embeds"], rtol=0, atol=0)
    assert [path.name for path in tmp_path.iterdir()] == [
        feature_cache_key(model.clip, flowers, transform, num_views=2, seed=0)
    ]  # and no staging folder left behind

    encode_images(model.clip, flowers, transform, num_views=2, seed=1, batch_size=4, cache_dir=tmp_path)
    assert encoder.call_count == 6  # another seed is another set of views


def test_default_cache_is_the_datasets_cache(model, flowers, processor, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    encode_images(model.clip, flowers, CoOpTransform(processor, train=False))
    assert len(list((tmp_path / "coop_hf_image_features").iterdir())) == 1


def test_views_do_not_depend_on_batch_size_or_workers(model, flowers, processor):
    transform = CoOpTransform(processor, train=True)
    one = encode_images(model.clip, flowers, transform, num_views=2, batch_size=1, use_cache=False)
    other = encode_images(model.clip, flowers, transform, num_views=2, batch_size=4, num_workers=2, use_cache=False)
    assert_close_fp32(one[:]["image_embeds"], other[:]["image_embeds"], depth=stages(2))  # batched apart


def test_later_views_encoded_apart_are_those_encoded_at_once(model, flowers, processor):
    """Views 2 and 3 asked for on their own (Tip-Adapter-F's training views after the cache's) are the last two of
    four encoded together; so are their "view" column and their row order."""
    transform = CoOpTransform(processor, train=True)
    together = encode_images(model.clip, flowers, transform, num_views=4, use_cache=False)[:]
    apart = encode_images(model.clip, flowers, transform, num_views=2, first_view=2, use_cache=False)[:]
    later = slice(2 * len(flowers), None)
    assert_close_fp32(apart["image_embeds"], together["image_embeds"][later], depth=stages(2))
    assert torch.equal(apart["view"], together["view"][later])
    assert torch.equal(apart["index"], together["index"][later])


def test_test_transform_gives_its_own_view(model, flowers, processor):
    transform = CoOpTransform(processor, train=False)
    features = encode_images(model.clip, flowers, transform, use_cache=False)
    pixel_values = transform({"image": flowers["image"], "label": flowers["label"]})["pixel_values"]
    with torch.no_grad():
        expected = model.clip.get_image_features(pixel_values=pixel_values).pooler_output
    assert_close_fp32(features[:]["image_embeds"], expected, depth=stages(2))
    with pytest.raises(ValueError, match="num_views=1"):
        encode_images(model.clip, flowers, transform, num_views=2)


def test_cache_key_covers_model_data_transform_views_and_seed(model, flowers, processor):
    train, test = CoOpTransform(processor, train=True), CoOpTransform(processor, train=False)
    key = feature_cache_key(model.clip, flowers, train, num_views=2, seed=0)
    assert key == feature_cache_key(model.clip, flowers, train, num_views=2, seed=0)
    other_weights = random_clip(tiny_clip_config(), seed=1)
    other_processor = AutoImageProcessor.from_pretrained(VIT_B32, image_mean=[0.5, 0.5, 0.5])
    variants = [
        feature_cache_key(other_weights, flowers, train, num_views=2, seed=0),
        feature_cache_key(model.clip, flowers.select([0, 1, 2]), train, num_views=2, seed=0),
        feature_cache_key(model.clip, flowers, test, num_views=2, seed=0),
        feature_cache_key(model.clip, flowers, CoOpTransform(other_processor, train=True), num_views=2, seed=0),
        feature_cache_key(model.clip, flowers, train, num_views=3, seed=0),
        feature_cache_key(model.clip, flowers, train, num_views=2, seed=1),
        feature_cache_key(model.clip, flowers, train, num_views=2, seed=0, first_view=2),
        feature_cache_key(
            model.clip, flowers, CoOpTransform(processor, train=True, crop_scale=(0.5, 1)), num_views=2, seed=0
        ),
    ]
    assert len({key, *variants}) == 1 + len(variants)


def test_cache_key_changes_with_the_transform_version(model, flowers, processor, monkeypatch):
    """Features cached before a change of the transform's pixels (e.g. its centre-crop rounding) are not reused."""
    test = CoOpTransform(processor, train=False)
    key = feature_cache_key(model.clip, flowers, test, num_views=1, seed=0)
    monkeypatch.setattr(CoOpTransform, "version", CoOpTransform.version - 1)
    assert feature_cache_key(model.clip, flowers, test, num_views=1, seed=0) != key

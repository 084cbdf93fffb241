"""`FitData`, the features the fitted methods (Tip-Adapter, Tip-Adapter-F, LP++) see: view v of image i is the
feature `encode_images` computes for that view of that image, and later views are those of a longer draw."""

import pytest
import torch
from transformers import AutoImageProcessor

from coop_hf.data import CoOpTransform, load_benchmark
from coop_hf.feature_cache import encode_images
from coop_hf.feature_fit import FitData
from tests.conftest import DATA, VIT_B32

SEED = 3
ROWS = [0, 40, 80, 120, 160]  # five caltech101 images of several classes


@pytest.fixture(scope="module")
def splits():
    caltech = load_benchmark("caltech101", DATA)
    return {name: caltech[name].select(ROWS[: 5 if name == "train" else 3]) for name in ("train", "val", "test")}


@pytest.fixture(scope="module")
def processor():
    return AutoImageProcessor.from_pretrained(VIT_B32)


@pytest.fixture()
def fit_data(clip_and_tokenizer, processor, splits, tmp_path) -> FitData:
    clip, _ = clip_and_tokenizer
    return FitData(
        clip, processor, splits["train"], splits["val"], full_val=splits["test"], seed=SEED, batch_size=4,
        cache_dir=str(tmp_path),
    )  # fmt: skip


def encoded_views(fit_data: FitData, num_views: int, first_view: int = 0) -> dict[str, torch.Tensor]:
    """`encode_images`' rows of the views `first_view`, ... of the training images (not cached: computed anew)."""
    transform = CoOpTransform(fit_data.image_processor, train=True)
    return encode_images(
        fit_data.clip, fit_data.train, transform, num_views=num_views, seed=SEED, first_view=first_view,
        batch_size=3, use_cache=False,
    )[:]  # fmt: skip


def assert_views_match(features: torch.Tensor, rows: dict[str, torch.Tensor], first_view: int = 0) -> None:
    """features[v, i] is the row of `encode_images` whose "view" is first_view + v and whose "index" is i."""
    views, images = features.shape[:2]
    pairs = list(zip(rows["view"].tolist(), rows["index"].tolist(), strict=True))
    assert sorted(pairs) == [(first_view + view, index) for view in range(views) for index in range(images)]
    for embeds, (view, index) in zip(rows["image_embeds"], pairs, strict=True):
        torch.testing.assert_close(
            features[view - first_view, index], embeds, rtol=1e-5, atol=1e-6, msg=f"view {view} of image {index}"
        )


def test_fit_data_views_are_encode_images_views(fit_data, splits):
    features, labels = fit_data.train_views(3)
    rows = encoded_views(fit_data, 3)
    assert features.shape == (3, len(splits["train"]), rows["image_embeds"].shape[1])
    assert not torch.allclose(features[0], features[1])  # the views differ, so a mix-up of them shows
    assert_views_match(features, rows)
    assert labels.tolist() == splits["train"]["label"]  # each image's label, in the split's order


def test_later_fit_data_views_are_those_of_a_longer_draw(fit_data):
    """Tip-Adapter-F's training views after its cache's: views 2 and 3 asked for apart (cached apart) are views 2
    and 3 of four drawn at once, and `encode_images(first_view=2)`'s."""
    longer, labels = fit_data.train_views(4)
    later, later_labels = fit_data.train_views(2, first_view=2)
    assert later.shape == (2, *longer.shape[1:])
    torch.testing.assert_close(later, longer[2:], rtol=1e-5, atol=1e-6)
    assert torch.equal(later_labels, labels)
    rows = encoded_views(fit_data, 2, first_view=2)
    assert sorted(set(rows["view"].tolist())) == [2, 3]
    assert_views_match(later, rows, first_view=2)


def test_fit_data_validation_features_are_the_test_transform_features(fit_data, splits):
    transform = CoOpTransform(fit_data.image_processor, train=False)
    for full, split in ((False, splits["val"]), (True, splits["test"])):
        features, labels = fit_data.val_features(full=full)
        rows = encode_images(fit_data.clip, split, transform, batch_size=3, use_cache=False)[:]
        torch.testing.assert_close(features, rows["image_embeds"], rtol=1e-5, atol=1e-6)
        assert labels.tolist() == split["label"]

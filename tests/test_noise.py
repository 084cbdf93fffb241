"""Label noise on a few-shot split: exact counts per class, seeded draws, audit columns, the report, errors."""

from collections import Counter

import datasets
import numpy as np
import pytest
import torch

from coop_hf.data import sample_few_shot
from coop_hf.noise import inject_label_noise, zero_shot_class_similarity
from tests.conftest import random_clip, tiny_clip_config
from tests.tolerances import fp32_tolerance

NAMES = ["cat", "dog", "fox", "owl"]


def _synthetic(rows_per_class: int) -> datasets.Dataset:
    """A train split of never-decoded image paths, `rows_per_class` per class."""
    paths = [f"/nowhere/{name}/{index:03d}.jpg" for name in NAMES for index in range(rows_per_class)]
    labels = [label for label in range(len(NAMES)) for _ in range(rows_per_class)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "image_path": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict({"image": paths, "label": labels, "image_path": paths}, features=features)


@pytest.fixture(scope="module")
def train() -> datasets.Dataset:
    return _synthetic(30)


@pytest.fixture(scope="module")
def shots(train) -> datasets.Dataset:
    return sample_few_shot(train, 16, seed=1)


def _noisy_rows(noisy: datasets.Dataset) -> list[int]:
    return np.flatnonzero(np.asarray(noisy["label"]) != np.asarray(noisy["clean_label"])).tolist()


# A similarity where each class is closest to the next one (cat -> dog -> fox -> owl -> cat).
SIMILARITY = np.eye(4) + 0.5 * np.roll(np.eye(4), 1, axis=1)


@pytest.mark.parametrize("noise_type", ["symmetric", "confusion"])
def test_relabelling_flips_exactly_the_requested_count_per_class(shots, noise_type):
    noisy, report = inject_label_noise(shots, noise_type, 0.25, seed=0, class_similarity=SIMILARITY)
    clean, labels = np.asarray(noisy["clean_label"]), np.asarray(noisy["label"])
    assert np.array_equal(clean, shots["label"]) and noisy["image_path"] == shots["image_path"]
    assert Counter(clean[labels != clean].tolist()) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert report.noisy_per_class == dict.fromkeys(NAMES, 4) and report.num_noisy == 16
    assert report.actual_rate == 0.25 and report.requested_rate == 0.25
    assert noisy.column_names == [*shots.column_names, "clean_label"]
    assert noisy.features["clean_label"] == shots.features["label"] == noisy.features["label"]
    if noise_type == "confusion":
        assert np.array_equal(labels[labels != clean], (clean[labels != clean] + 1) % 4)


def test_replace_swaps_in_images_of_other_classes_from_the_pool(train, shots):
    noisy, report = inject_label_noise(shots, "replace", 2 / 16, seed=0, pool=train)
    labels, clean = np.asarray(noisy["label"]), np.asarray(noisy["clean_label"])
    assert np.array_equal(labels, shots["label"])  # the labels still say the class of the replaced shot
    assert Counter(labels[labels != clean].tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert report.noisy_per_class == dict.fromkeys(NAMES, 2) and report.actual_rate == 0.125
    assert report.rows_per_class == dict.fromkeys(NAMES, 16)
    paths = noisy["image_path"]
    assert len(set(paths)) == len(paths)  # no pool image twice, none already among the shots
    kept, swapped = set(shots["image_path"]) & set(paths), set(paths) - set(shots["image_path"])
    assert len(kept) == 56 and len(swapped) == 8
    for row in _noisy_rows(noisy):  # the image's real class is recorded in clean_label
        assert paths[row].split("/")[2] == NAMES[clean[row]] != NAMES[labels[row]]


@pytest.mark.parametrize("noise_type", ["symmetric", "replace", "confusion"])
def test_the_draw_is_fixed_by_the_seed(train, shots, noise_type):
    def draw(seed: int) -> tuple[list[int], list[int], list[str]]:
        noisy, _ = inject_label_noise(shots, noise_type, 0.5, seed=seed, pool=train, class_similarity=SIMILARITY)
        return _noisy_rows(noisy), noisy["label"], noisy["image_path"]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_none_and_zero_rate_keep_the_data(shots, train):
    for noise_type in ("none", "symmetric", "replace"):
        noisy, report = inject_label_noise(shots, noise_type, 0.0, seed=0, pool=train)
        assert noisy["label"] == noisy["clean_label"] == shots["label"]
        assert noisy["image_path"] == shots["image_path"]
        assert report.actual_rate == 0.0 and report.num_noisy == 0


def test_counts_round_half_up_per_class(train):
    uneven = train.select([*range(0, 10), *range(30, 35), *range(60, 63), *range(90, 92)])  # 10, 5, 3, 2 rows
    _, report = inject_label_noise(uneven, "symmetric", 0.5, seed=0)
    assert report.noisy_per_class == {"cat": 5, "dog": 3, "fox": 2, "owl": 1}
    assert report.actual_rate == pytest.approx(11 / 20)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_outside_the_unit_interval_is_refused(shots, rate):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        inject_label_noise(shots, "symmetric", rate, seed=0)


def test_bad_arguments_are_named(shots, train):
    with pytest.raises(ValueError, match="Unknown noise_type 'flip'"):
        inject_label_noise(shots, "flip", 0.1, seed=0)
    with pytest.raises(ValueError, match="needs pool="):
        inject_label_noise(shots, "replace", 0.1, seed=0)
    renamed = train.cast_column("label", datasets.ClassLabel(names=["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="pool's class list differs"):
        inject_label_noise(shots, "replace", 0.1, seed=0, pool=renamed)
    with pytest.raises(ValueError, match=r"lacks the dataset's columns \['image_path'\]"):
        inject_label_noise(shots, "replace", 0.1, seed=0, pool=train.remove_columns("image_path"))
    with pytest.raises(ValueError, match="needs class_similarity="):
        inject_label_noise(shots, "confusion", 0.1, seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*4 classes"):
        inject_label_noise(shots, "confusion", 0.1, seed=0, class_similarity=np.eye(3))
    with pytest.raises(ValueError, match="rate must be 0"):
        inject_label_noise(shots, "none", 0.1, seed=0)
    noisy, _ = inject_label_noise(shots, "symmetric", 0.1, seed=0)
    with pytest.raises(ValueError, match="already has a 'clean_label'"):
        inject_label_noise(noisy, "symmetric", 0.1, seed=0)


def test_a_pool_too_small_names_the_class_and_counts(train):
    shots = sample_few_shot(train, 29, seed=0)  # leaves one unused image per class: 3 of other classes for cat
    with pytest.raises(ValueError, match=r"Class 0 'cat' needs 4 image\(s\).*29 shots.*only 3 unused"):
        inject_label_noise(shots, "replace", 4 / 29, seed=0, pool=train)


def test_zero_shot_class_similarity(clip_tokenizer):
    clip = random_clip(tiny_clip_config())
    similarity = zero_shot_class_similarity(clip, clip_tokenizer, NAMES, ["a photo of a {}."])
    # Cosines (magnitude at most 1), each one dot product of normalised features: float32 rounding of depth 1.
    tol = fp32_tolerance(1)
    assert similarity.shape == (4, 4) and np.allclose(similarity, similarity.T, rtol=0, atol=tol)
    assert np.allclose(np.diag(similarity), 1.0, rtol=0, atol=tol)
    noisy, report = inject_label_noise(
        _synthetic(4), "confusion", 0.5, seed=0, class_similarity=torch.tensor(similarity)
    )
    assert report.num_noisy == 8
    off_diagonal = similarity - 2 * np.eye(4)
    labels, clean = np.asarray(noisy["label"]), np.asarray(noisy["clean_label"])
    assert all(labels[row] == off_diagonal[clean[row]].argmax() for row in _noisy_rows(noisy))

"""Generic image-classification datasets: a local imagefolder, save_to_disk folders, load_dataset_splits."""

from pathlib import Path

import datasets
import pytest
from PIL import Image

from coop_hf.data import (
    build_few_shot_splits,
    load_dataset_splits,
    load_image_classification,
)
from tests.conftest import DATA

CLASSES = ["golden_retriever", "tabby_cat", "zebra"]


def _imagefolder(root: Path, splits: dict[str, int]) -> Path:
    """root/<split>/<class>/<n>.png with ``splits[split]`` tiny PNGs per class."""
    for split, per_class in splits.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.new("RGB", (6, 5), (label * 80, index * 30, 10)).save(folder / f"{index}.png")
    return root


def test_local_imagefolder(tmp_path):
    root = _imagefolder(tmp_path / "pets", {"train": 5, "validation": 2, "test": 3})
    splits = load_image_classification(str(root))
    assert sorted(splits) == ["test", "train", "val"]
    assert {name: len(split) for name, split in splits.items()} == {"train": 15, "val": 6, "test": 9}
    for split in splits.values():
        assert split.column_names == ["image", "label"]
        assert isinstance(split.features["image"], datasets.Image)
        assert split.features["label"].names == ["golden retriever", "tabby cat", "zebra"]
    assert isinstance(splits["train"][0]["image"], Image.Image)
    few = build_few_shot_splits(splits, 2, seed=1)
    assert len(few["train"]) == 6 and len(few["val"]) == 6 and len(few["test"]) == 9


def test_local_imagefolder_without_val_and_without_test(tmp_path):
    root = _imagefolder(tmp_path / "no_val", {"train": 6, "test": 2})
    splits = load_image_classification(str(root))
    assert sorted(splits) == ["test", "train"]
    few = build_few_shot_splits(splits, 2, seed=0)
    assert len(few["val"]) == 6
    only_train = _imagefolder(tmp_path / "only_train", {"train": 2})
    with pytest.raises(ValueError, match=r"has no test split \(its splits: \['train'\]\).*split_map"):
        load_image_classification(str(only_train))
    splits = load_image_classification(str(only_train), split_map={"test": "train"})
    assert len(splits["test"]) == 6
    with pytest.raises(ValueError, match="does not have"):
        load_image_classification(str(only_train), split_map={"test": "holdout"})


def test_save_to_disk_dataset_dict_with_other_column_names(tmp_path):
    files = []
    for index in range(4):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (5, 5), (index * 60, 0, 0)).save(path)
        files.append(str(path))
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=["sea_lake", "forest"]),
            "caption": datasets.Value("string"),
        }
    )
    rows = {"img": files, "fine_label": [0, 1, 0, 1], "caption": ["a", "b", "c", "d"]}
    split = datasets.Dataset.from_dict(rows, features=features)
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(saved))
    splits, classnames, template = load_dataset_splits(str(saved), None)
    assert classnames == ["sea lake", "forest"]
    assert template == "a photo of a {}."
    assert sorted(splits) == ["test", "train", "val"]
    assert splits["val"].column_names == ["image", "label"]
    assert splits["test"][1]["label"] == 1 and isinstance(splits["test"][1]["image"], Image.Image)

    single = tmp_path / "single"
    split.save_to_disk(str(single))
    with pytest.raises(ValueError, match="no test split"):
        load_image_classification(str(single))


def test_missing_image_or_label_column_is_explained(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    no_label = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "x.png")], "label": [0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    datasets.DatasetDict({"train": no_label, "test": no_label}).save_to_disk(str(tmp_path / "no_label"))
    with pytest.raises(ValueError, match="No datasets.ClassLabel column"):
        load_image_classification(str(tmp_path / "no_label"))
    no_image = datasets.Dataset.from_dict(
        {"path": ["x.png"], "label": [0]},
        features=datasets.Features({"path": datasets.Value("string"), "label": datasets.ClassLabel(names=["a"])}),
    )
    datasets.DatasetDict({"train": no_image, "test": no_image}).save_to_disk(str(tmp_path / "no_image"))
    with pytest.raises(ValueError, match="No datasets.Image column"):
        load_image_classification(str(tmp_path / "no_image"))


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not checked out beside the repo")
def test_load_dataset_splits_dispatches_benchmarks():
    splits, classnames, template = load_dataset_splits("oxford_flowers", str(DATA))
    assert len(classnames) == 102 and len(splits["train"]) == 2040
    assert template == "a photo of a {}, a type of flower."
    assert "image_path" in splits["test"].column_names


def test_benchmark_name_without_data_dir_says_to_pass_one():
    with pytest.raises(OSError, match=r"'dtd' is a CoOp benchmark: pass --data_dir, the folder holding dtd/"):
        load_dataset_splits("dtd", None)

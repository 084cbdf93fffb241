"""Benchmark registry and on-disk loaders: real mini Flowers102/Caltech101, split files, tiny layouts."""

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from coop_hf.data import (
    BENCHMARKS,
    DEFAULT_TEMPLATE,
    IMAGENET_TEMPLATES_SELECT,
    ensemble_templates,
    get_benchmark,
    load_benchmark,
    read_split_zhou,
    split_file_classnames,
    templates_for,
)
from tests.conftest import DATA

REFERENCE_NAMES = {
    "oxford_flowers": "oxford_flowers",
    "caltech101": "caltech-101",
    "oxford_pets": "oxford_pets",
    "stanford_cars": "stanford_cars",
    "fgvc_aircraft": "fgvc_aircraft",
    "food101": "food-101",
    "sun397": "sun397",
    "dtd": "dtd",
    "eurosat": "eurosat",
    "ucf101": "ucf101",
    "imagenet": "imagenet",
    "imagenet_v2": "imagenetv2",
    "imagenet_sketch": "imagenet-sketch",
    "imagenet_a": "imagenet-adversarial",
    "imagenet_r": "imagenet-rendition",
}


def _image(path: Path, color=(120, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)


def _flowers_layout(root: Path, split: dict) -> Path:
    """A tiny oxford_flowers/ layout under ``root`` whose images are the files ``split`` names."""
    folder = root / "oxford_flowers"
    for entries in split.values():
        for relative, _, _ in entries:
            _image(folder / "jpg" / relative)
    (folder / "split_zhou_OxfordFlowers.json").write_text(json.dumps(split))
    return folder


TINY_SPLIT = {
    "train": [["a1.jpg", 0, "pink primrose"], ["a2.jpg", 0, "pink primrose"], ["b1.jpg", 1, "fire_lily"]],
    "val": [["a3.jpg", 0, "pink primrose"], ["b2.jpg", 1, "fire_lily"]],
    "test": [["a4.jpg", 0, "pink primrose"], ["b3.jpg", 1, "fire_lily"]],
}


def test_registry_has_the_reference_names_and_folders():
    assert {name: spec.folder for name, spec in BENCHMARKS.items()} == REFERENCE_NAMES


def test_templates():
    assert templates_for("oxford_flowers") == "a photo of a {}, a type of flower."
    assert templates_for("dtd") == "{} texture."
    assert templates_for("eurosat") == "a centered satellite photo of {}."
    assert templates_for("ucf101") == "a photo of a person doing {}."
    assert templates_for("food101") == "a photo of {}, a type of food."
    assert templates_for("imagenet_r") == DEFAULT_TEMPLATE == "a photo of a {}."
    assert templates_for("someone/my-dataset") == DEFAULT_TEMPLATE
    assert BENCHMARKS["oxford_pets"].template == "a photo of a {}, a type of pet."
    assert len(IMAGENET_TEMPLATES_SELECT) == 7
    assert ensemble_templates("imagenet") == list(IMAGENET_TEMPLATES_SELECT)
    assert ensemble_templates("dtd") == [*IMAGENET_TEMPLATES_SELECT, "{} texture."]


def test_unknown_benchmark_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="Unknown benchmark 'flowers'.*oxford_flowers.*imagenet_r"):
        load_benchmark("flowers", tmp_path)
    with pytest.raises(ValueError, match="caltech101"):
        get_benchmark("nope")


def test_missing_folder_names_the_expected_path_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_benchmark("caltech101", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "caltech-101" / "101_ObjectCategories") in message
    assert str(tmp_path / "caltech-101" / "split_zhou_Caltech101.json") in message
    assert "101_ObjectCategories.tar.gz" in message and "DATASETS.md" in message


def test_real_caltech101_counts_and_class_fixes():
    splits = load_benchmark("caltech101", DATA)
    assert {name: len(split) for name, split in splits.items()} == {"train": 1967, "val": 400, "test": 999}
    names = splits["train"].features["label"].names
    assert len(names) == 100
    assert {"face", "leopard", "motorbike", "airplane"} <= set(names)
    assert not {"BACKGROUND_Google", "Faces_easy", "Faces", "airplanes"} & set(names)
    assert all("_" not in name for name in names)
    raw = json.loads((DATA / "caltech-101" / "split_zhou_Caltech101.json").read_text())
    first_path, first_label, first_name = raw["train"][0]
    row = splits["train"][0]
    assert row["label"] == first_label and names[first_label] == first_name.replace("_", " ")
    assert row["image_path"] == str(DATA / "caltech-101" / "101_ObjectCategories" / first_path)
    assert splits["train"].features["image"] == datasets.Image()


def test_real_flowers102_counts_and_names_match_cat_to_name():
    splits = load_benchmark("oxford_flowers", DATA)
    assert {name: len(split) for name, split in splits.items()} == {"train": 2040, "val": 408, "test": 1020}
    names = splits["test"].features["label"].names
    cat_to_name = json.loads((DATA / "oxford_flowers" / "cat_to_name.json").read_text())
    assert len(names) == 102
    assert names == [cat_to_name[str(label + 1)] for label in range(102)]
    image = splits["val"][5]["image"]
    assert isinstance(image, Image.Image) and image.size[0] > 0


@pytest.mark.parametrize(
    ("filename", "count", "dataset_name"),
    [
        ("split_zhou_DescribableTextures.json", 47, "dtd"),
        ("split_zhou_EuroSAT.json", 10, "eurosat"),
        ("split_zhou_OxfordPets.json", 37, "oxford_pets"),
        ("split_zhou_StanfordCars.json", 196, "stanford_cars"),
        ("split_zhou_UCF101.json", 101, "ucf101"),
    ],
)
def test_split_files_give_class_lists_of_the_right_size(filename, count, dataset_name):
    names = split_file_classnames(DATA / "coop-splits" / filename, BENCHMARKS[dataset_name].fixes)
    assert len(names) == count == len(set(names))
    assert all("_" not in name for name in names)


def test_split_file_class_name_fixes():
    splits = DATA / "coop-splits"
    eurosat = split_file_classnames(splits / "split_zhou_EuroSAT.json", BENCHMARKS["eurosat"].fixes)
    assert eurosat[:3] == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"]
    assert split_file_classnames(splits / "split_zhou_UCF101.json")[0] == "Apply Eye Makeup"
    assert "american bulldog" in split_file_classnames(splits / "split_zhou_OxfordPets.json")


def test_eurosat_raw_folder_names_are_renamed(tmp_path):
    split = {s: [[f"AnnualCrop/{s}.jpg", 0, "AnnualCrop"], [f"SeaLake/{s}.jpg", 1, "SeaLake"]] for s in TINY_SPLIT}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    assert split_file_classnames(path, BENCHMARKS["eurosat"].fixes) == ["Annual Crop Land", "Sea or Lake"]


def test_caltech_ignored_classes_are_dropped(tmp_path):
    split = {
        s: [[f"BACKGROUND_Google/{s}.jpg", 0, "BACKGROUND_Google"], [f"Faces/{s}.jpg", 1, "Faces"]]
        + [[f"airplanes/{s}.jpg", 2, "airplanes"], [f"Faces_easy/{s}.jpg", 3, "Faces_easy"]]
        for s in TINY_SPLIT
    }
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    parsed = read_split_zhou(path, tmp_path, BENCHMARKS["caltech101"].fixes)
    assert parsed.classnames == ["face", "airplane"]
    assert [label for _, label in parsed.splits["test"]] == [0, 1]


def test_tiny_layout_loads_with_fixed_names(tmp_path):
    _flowers_layout(tmp_path, TINY_SPLIT)
    splits = load_benchmark("oxford_flowers", tmp_path)
    assert splits["train"].features["label"].names == ["pink primrose", "fire lily"]
    assert splits["test"]["label"] == [0, 1]
    assert splits["train"][2]["image_path"] == str(tmp_path / "oxford_flowers" / "jpg" / "b1.jpg")


def test_split_entry_naming_a_missing_file_is_reported(tmp_path):
    folder = _flowers_layout(tmp_path, TINY_SPLIT)
    (folder / "jpg" / "b2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="b2.jpg"):
        load_benchmark("oxford_flowers", tmp_path)


def test_label_outside_the_class_list_names_the_entry(tmp_path):
    split = json.loads(json.dumps(TINY_SPLIT))
    split["test"].append(["c1.jpg", 7, "moon orchid"])
    _flowers_layout(tmp_path, split)
    with pytest.raises(ValueError, match=r'entry test\[2\] \["c1.jpg", 7, "moon orchid"\].*outside the class list'):
        load_benchmark("oxford_flowers", tmp_path)


def test_class_name_disagreeing_with_label_names_the_entry(tmp_path):
    split = json.loads(json.dumps(TINY_SPLIT))
    split["val"][1][2] = "moon orchid"
    _flowers_layout(tmp_path, split)
    with pytest.raises(ValueError, match=r"entry val\[1\].*'moon orchid'.*'fire lily'"):
        load_benchmark("oxford_flowers", tmp_path)
    split = json.loads(json.dumps(TINY_SPLIT))
    split["train"][1][2] = "other"
    (tmp_path / "oxford_flowers" / "split_zhou_OxfordFlowers.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"entry train\[1\].*'other'.*train\[0\]"):
        load_benchmark("oxford_flowers", tmp_path)


def test_malformed_entry_is_named(tmp_path):
    split = json.loads(json.dumps(TINY_SPLIT))
    split["train"][0] = ["a1.jpg", "0", "pink primrose"]
    _flowers_layout(tmp_path, split)
    with pytest.raises(ValueError, match=r"entry train\[0\].*relative_path, label, classname"):
        load_benchmark("oxford_flowers", tmp_path)


def _classnames_txt(folder: Path, wnids: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{wnid} {name}\n" for wnid, name in wnids.items()))


WNIDS = {"n01": "tench", "n02": "goldfish", "n03": "great white shark"}


def test_imagenet_layout(tmp_path):
    root = tmp_path / "imagenet"
    _classnames_txt(root, WNIDS)
    for wnid in WNIDS:
        _image(root / "images" / "train" / wnid / f"{wnid}_1.JPEG")
        _image(root / "images" / "train" / wnid / f"{wnid}_2.JPEG")
    _image(root / "images" / "val" / "n02" / "v.JPEG")
    splits = load_benchmark("imagenet", tmp_path)
    assert splits["train"].features["label"].names == list(WNIDS.values())
    assert len(splits["train"]) == 6 and splits["test"]["label"] == [1] == splits["val"]["label"]


def test_imagenet_variants_layouts(tmp_path):
    _classnames_txt(tmp_path / "imagenetv2", WNIDS)
    for label in range(3):
        _image(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(label) / "x.jpeg")
    v2 = load_benchmark("imagenet_v2", tmp_path)
    assert list(v2) == ["test"] and v2["test"]["label"] == [0, 1, 2]

    _classnames_txt(tmp_path / "imagenet-sketch", WNIDS)
    _image(tmp_path / "imagenet-sketch" / "images" / "n03" / "s.JPEG")
    sketch = load_benchmark("imagenet_sketch", tmp_path)
    assert sketch["test"]["label"] == [2] and len(sketch["test"].features["label"].names) == 3

    for name, folder, image_dir in [
        ("imagenet_a", "imagenet-adversarial", "imagenet-a"),
        ("imagenet_r", "imagenet-rendition", "imagenet-r"),
    ]:
        _classnames_txt(tmp_path / folder, WNIDS)
        _image(tmp_path / folder / image_dir / "n01" / "a.jpg")
        _image(tmp_path / folder / image_dir / "n03" / "b.jpg")
        (tmp_path / folder / image_dir / "README.txt").write_text("not a class")
        subset = load_benchmark(name, tmp_path)
        assert list(subset) == ["test"]
        assert subset["test"].features["label"].names == ["tench", "great white shark"]
        assert subset["test"]["label"] == [0, 1]


def test_imagenet_folder_not_in_classnames_is_reported(tmp_path):
    _classnames_txt(tmp_path / "imagenet-sketch", WNIDS)
    _image(tmp_path / "imagenet-sketch" / "images" / "n99" / "s.JPEG")
    with pytest.raises(ValueError, match="n99"):
        load_benchmark("imagenet_sketch", tmp_path)


def test_fgvc_aircraft_layout(tmp_path):
    root = tmp_path / "fgvc_aircraft"
    root.mkdir()
    (root / "variants.txt").write_text("707-320\nA300B4\nCessna 172\n")
    lists = {"train": "0001 707-320\n0002 Cessna 172\n", "val": "0003 A300B4\n", "test": "0004 Cessna 172\n"}
    for split, text in lists.items():
        (root / f"images_variant_{split}.txt").write_text(text)
    for number in range(1, 5):
        _image(root / "images" / f"{number:04d}.jpg")
    splits = load_benchmark("fgvc_aircraft", tmp_path)
    assert splits["train"].features["label"].names == ["707-320", "A300B4", "Cessna 172"]
    assert splits["train"]["label"] == [0, 2] and splits["test"]["label"] == [2]
    (root / "images" / "0004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="0004.jpg"):
        load_benchmark("fgvc_aircraft", tmp_path)

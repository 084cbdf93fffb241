"""Registry of the CoOp benchmark datasets and ``load_benchmark`` for their on-disk layouts."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import datasets

from .aircraft import LIST_FILES, read_fgvc_aircraft
from .classnames import NO_FIXES, ClassnameFixes
from .imagenet import (
    V2_IMAGE_DIR,
    read_imagenet,
    read_imagenet_full_test,
    read_imagenet_subset,
    read_imagenet_v2,
)
from .records import LabeledFiles, check_files_exist, to_dataset_dict
from .split_zhou import read_split_zhou
from .templates import templates_for

LAYOUT_DOC = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

CALTECH101_FIXES = ClassnameFixes(
    rename={"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"},
    ignored=frozenset({"BACKGROUND_Google", "Faces_easy"}),
)
EUROSAT_FIXES = ClassnameFixes(
    rename={
        "AnnualCrop": "Annual Crop Land",
        "Forest": "Forest",
        "HerbaceousVegetation": "Herbaceous Vegetation Land",
        "Highway": "Highway or Road",
        "Industrial": "Industrial Buildings",
        "Pasture": "Pasture Land",
        "PermanentCrop": "Permanent Crop Land",
        "Residential": "Residential Buildings",
        "River": "River",
        "SeaLake": "Sea or Lake",
    }
)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a CoOp benchmark lives under ``data_dir`` and how its annotations are read.

    ``image_dir`` is relative to ``folder`` ("" for the folder itself). Datasets with a ``split_file``
    are read from that split_zhou file (whose class names already carry the reference's per-dataset
    renames: Pets' lower-case breeds, Cars' leading year, SUN397's reordered scene names, UCF101's split
    CamelCase); the others use ``reader``. ``required`` lists the paths that must exist before reading.
    """

    name: str
    folder: str
    image_dir: str
    required: tuple[str, ...]
    download: str
    split_file: str | None = None
    reader: Callable[[str, str], LabeledFiles] | None = None
    fixes: ClassnameFixes = NO_FIXES

    @property
    def template(self) -> str:
        """The hand-made zero-shot template of this benchmark."""
        return templates_for(self.name)


def _zhou(
    name: str, folder: str, image_dir: str, split_file: str, download: str, fixes: ClassnameFixes = NO_FIXES
) -> BenchmarkSpec:
    required = (image_dir, split_file)
    return BenchmarkSpec(name, folder, image_dir, required, download, split_file=split_file, fixes=fixes)


def _variant(
    name: str, folder: str, image_dir: str, reader: Callable[[str, str], LabeledFiles], download: str
) -> BenchmarkSpec:
    return BenchmarkSpec(name, folder, image_dir, (image_dir, "classnames.txt"), download, reader=reader)


_SPECS = (
    _zhou(
        "oxford_flowers",
        "oxford_flowers",
        "jpg",
        "split_zhou_OxfordFlowers.json",
        "102flowers.tgz (extracted as jpg/) and split_zhou_OxfordFlowers.json",
    ),
    _zhou(
        "caltech101",
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        "101_ObjectCategories.tar.gz (extracted in place) and split_zhou_Caltech101.json",
        fixes=CALTECH101_FIXES,
    ),
    _zhou(
        "oxford_pets",
        "oxford_pets",
        "images",
        "split_zhou_OxfordPets.json",
        "the Oxford-IIIT Pet images.tar.gz (extracted as images/) and split_zhou_OxfordPets.json",
    ),
    BenchmarkSpec(
        "stanford_cars",
        "stanford_cars",
        "",
        ("cars_train", "cars_test", "split_zhou_StanfordCars.json"),
        "cars_train.tgz and cars_test.tgz (extracted in place) and split_zhou_StanfordCars.json",
        split_file="split_zhou_StanfordCars.json",
    ),
    BenchmarkSpec(
        "fgvc_aircraft",
        "fgvc_aircraft",
        "images",
        ("images", "variants.txt", *LIST_FILES.values()),
        "fgvc-aircraft-2013b.tar.gz, keeping its data/ folder renamed to fgvc_aircraft/",
        reader=read_fgvc_aircraft,
    ),
    _zhou(
        "food101",
        "food-101",
        "images",
        "split_zhou_Food101.json",
        "food-101.tar.gz (extracts to food-101/) and split_zhou_Food101.json",
    ),
    _zhou(
        "sun397",
        "sun397",
        "SUN397",
        "split_zhou_SUN397.json",
        "SUN397.tar.gz (extracted as SUN397/) and split_zhou_SUN397.json",
    ),
    _zhou(
        "dtd",
        "dtd",
        "images",
        "split_zhou_DescribableTextures.json",
        "dtd-r1.0.1.tar.gz (extracts to dtd/) and split_zhou_DescribableTextures.json",
    ),
    _zhou(
        "eurosat",
        "eurosat",
        "2750",
        "split_zhou_EuroSAT.json",
        "EuroSAT.zip (extracted as 2750/) and split_zhou_EuroSAT.json",
        fixes=EUROSAT_FIXES,
    ),
    _zhou(
        "ucf101",
        "ucf101",
        "UCF-101-midframes",
        "split_zhou_UCF101.json",
        "UCF-101-midframes.zip (middle video frames) and split_zhou_UCF101.json",
    ),
    BenchmarkSpec(
        "imagenet",
        "imagenet",
        "images",
        ("images/train", "images/val", "classnames.txt"),
        "the ILSVRC-2012 train and val sets as images/train and images/val (one folder per wnid) "
        "and CoOp's classnames.txt",
        reader=read_imagenet,
    ),
    _variant(
        "imagenet_v2",
        "imagenetv2",
        V2_IMAGE_DIR,
        read_imagenet_v2,
        "imagenetv2-matched-frequency.tar.gz and a copy of imagenet/classnames.txt",
    ),
    _variant(
        "imagenet_sketch",
        "imagenet-sketch",
        "images",
        read_imagenet_full_test,
        "ImageNet-Sketch (extracted as images/) and a copy of imagenet/classnames.txt",
    ),
    _variant(
        "imagenet_a",
        "imagenet-adversarial",
        "imagenet-a",
        read_imagenet_subset,
        "imagenet-a.tar (extracted as imagenet-a/) and a copy of imagenet/classnames.txt",
    ),
    _variant(
        "imagenet_r",
        "imagenet-rendition",
        "imagenet-r",
        read_imagenet_subset,
        "imagenet-r.tar (extracted as imagenet-r/) and a copy of imagenet/classnames.txt",
    ),
)

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in _SPECS}
"""The CoOp benchmarks, keyed by the reference config names."""


def get_benchmark(name: str) -> BenchmarkSpec:
    """Return the registry entry of benchmark ``name``; an unknown name raises listing the valid ones."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def _check_layout(spec: BenchmarkSpec, root: str) -> None:
    missing = [os.path.join(root, path) for path in spec.required if not os.path.exists(os.path.join(root, path))]
    if missing:
        listed = "\n  ".join(missing)
        raise FileNotFoundError(
            f"Benchmark {spec.name!r} is not laid out under {os.path.dirname(root)}; missing:\n  {listed}\n"
            f"Put {spec.download} in {root} (links and layout: {LAYOUT_DOC})."
        )


def read_benchmark(name: str, data_dir: str | os.PathLike) -> LabeledFiles:
    """Read benchmark ``name``'s class names and per-split (image path, label) pairs.

    Every image a split file or list names is checked to exist, so a broken download fails here.
    """
    spec = get_benchmark(name)
    root = os.path.join(os.path.abspath(os.path.expanduser(data_dir)), spec.folder)
    _check_layout(spec, root)
    image_dir = os.path.join(root, spec.image_dir)
    if spec.split_file is not None:
        split_file = os.path.join(root, spec.split_file)
        parsed = read_split_zhou(split_file, image_dir, spec.fixes)
        check_files_exist(parsed, split_file)
        return parsed
    assert spec.reader is not None
    return spec.reader(root, image_dir)


def load_benchmark(name: str, data_dir: str | os.PathLike) -> datasets.DatasetDict:
    """Load a CoOp benchmark from ``data_dir`` (the folder holding e.g. ``oxford_flowers/``).

    Returns splits "train", "val" and "test" (the test-only variants: "test") with features
    ``{"image": Image(), "label": ClassLabel(names=classnames), "image_path": string}``; images stay file
    paths and are decoded lazily. Class names carry the reference's fixes.
    """
    return to_dataset_dict(read_benchmark(name, data_dir))

"""Reading the ImageNet-family layouts used by CoOp: ``classnames.txt`` plus one image folder per class."""

from __future__ import annotations

import os

from .classnames import NO_FIXES
from .records import LabeledFiles

V2_IMAGE_DIR = "imagenetv2-matched-frequency-format-val"


def read_classnames_txt(path: str | os.PathLike) -> dict[str, str]:
    """Read CoOp's ``classnames.txt`` (``<wnid> <class name>`` per line) into an ordered wnid -> name map."""
    names: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            wnid, _, name = line.strip().partition(" ")
            if not name:
                raise ValueError(f"{path}, line {number} {line.strip()!r}: expected '<wnid> <class name>'")
            names[wnid] = NO_FIXES.apply(name)
    return names


def _subfolders(path: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))


def _images_in(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, entry.name)
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
    )


def _wnid_folders(image_dir: str, names: dict[str, str], classnames_file: str) -> list[str]:
    folders = _subfolders(image_dir)
    if not folders:
        raise ValueError(f"{image_dir} holds no class folders; expected one folder per wnid")
    unknown = [folder for folder in folders if folder not in names]
    if unknown:
        raise ValueError(f"{image_dir}: folder(s) {unknown[:5]} are not wnids listed in {classnames_file}")
    return folders


def _labeled_images(image_dir: str, folders: list[str], label_of: dict[str, int]) -> list[tuple[str, int]]:
    return [(path, label_of[folder]) for folder in folders for path in _images_in(os.path.join(image_dir, folder))]


def _read_full(root: str, image_dirs: list[str]) -> tuple[list[str], list[list[tuple[str, int]]]]:
    classnames_file = os.path.join(root, "classnames.txt")
    names = read_classnames_txt(classnames_file)
    label_of = {wnid: label for label, wnid in enumerate(names)}
    splits = [_labeled_images(d, _wnid_folders(d, names, classnames_file), label_of) for d in image_dirs]
    return list(names.values()), splits


def read_imagenet(root: str, image_dir: str) -> LabeledFiles:
    """ImageNet: ``images/train`` for training; ``images/val`` is the test split and, as in CoOp, also val."""
    classnames, (train, test) = _read_full(root, [os.path.join(image_dir, "train"), os.path.join(image_dir, "val")])
    return LabeledFiles(classnames=classnames, splits={"train": train, "val": test, "test": test})


def read_imagenet_full_test(root: str, image_dir: str) -> LabeledFiles:
    """ImageNet-Sketch: 1000 wnid folders, labels in ``classnames.txt`` order; test only."""
    classnames, (test,) = _read_full(root, [image_dir])
    return LabeledFiles(classnames=classnames, splits={"test": test})


def read_imagenet_v2(root: str, image_dir: str) -> LabeledFiles:
    """ImageNetV2: folders named by class index ``0``..``999`` in ``classnames.txt`` order; test only."""
    names = read_classnames_txt(os.path.join(root, "classnames.txt"))
    pairs = []
    for label in range(len(names)):
        folder = os.path.join(image_dir, str(label))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"ImageNetV2 class folder {folder} is missing (expected folders 0..{len(names) - 1})"
            )
        pairs.extend((path, label) for path in _images_in(folder))
    return LabeledFiles(classnames=list(names.values()), splits={"test": pairs})


def read_imagenet_subset(root: str, image_dir: str) -> LabeledFiles:
    """ImageNet-A / -R: a subset of ImageNet's wnids, labelled 0..K-1 in sorted folder order; test only."""
    classnames_file = os.path.join(root, "classnames.txt")
    names = read_classnames_txt(classnames_file)
    folders = _wnid_folders(image_dir, names, classnames_file)
    label_of = {wnid: label for label, wnid in enumerate(folders)}
    return LabeledFiles(
        classnames=[names[wnid] for wnid in folders],
        splits={"test": _labeled_images(image_dir, folders, label_of)},
    )

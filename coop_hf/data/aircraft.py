"""Reading CoOp's FGVC-Aircraft layout: ``variants.txt`` plus ``images_variant_<split>.txt`` lists."""

from __future__ import annotations

import os

from .classnames import NO_FIXES
from .records import LabeledFiles, check_files_exist

LIST_FILES = {
    "train": "images_variant_train.txt",
    "val": "images_variant_val.txt",
    "test": "images_variant_test.txt",
}


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def read_fgvc_aircraft(root: str, image_dir: str) -> LabeledFiles:
    """Read FGVC-Aircraft's variant splits (labels in ``variants.txt`` order); every image must exist."""
    variants = _read_lines(os.path.join(root, "variants.txt"))
    label_of = {variant: label for label, variant in enumerate(variants)}
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, list_file in LIST_FILES.items():
        path = os.path.join(root, list_file)
        pairs = []
        for number, line in enumerate(_read_lines(path), start=1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise ValueError(f"{path}, line {number} {line!r}: variant {variant!r} is not in variants.txt")
            pairs.append((os.path.join(image_dir, f"{image_id}.jpg"), label_of[variant]))
        splits[split] = pairs
    parsed = LabeledFiles(classnames=[NO_FIXES.apply(v) for v in variants], splits=splits)
    check_files_exist(parsed, root)
    return parsed

"""Reading CoOp's ``split_zhou_<Name>.json`` files: per split, a list of [relative_path, label, classname]."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .classnames import NO_FIXES, ClassnameFixes
from .records import LabeledFiles

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class _Entry:
    split: str
    index: int
    raw: list
    path: str
    label: int
    classname: str

    def describe(self, split_file: str | os.PathLike) -> str:
        return f"{split_file}: entry {self.split}[{self.index}] {json.dumps(self.raw)}"


def _load_json(split_file: str | os.PathLike) -> dict:
    try:
        with open(split_file, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{split_file} is not valid JSON: {err}") from err
    missing = [split for split in SPLITS if not isinstance(data, dict) or split not in data]
    if missing:
        raise ValueError(f"{split_file} has no {', '.join(repr(s) for s in missing)} list; expected keys {SPLITS}")
    return data


def _parse_entries(
    split_file: str | os.PathLike, split: str, raw_entries: list, fixes: ClassnameFixes
) -> list[_Entry]:
    entries = []
    for index, raw in enumerate(raw_entries):
        valid = (
            isinstance(raw, list)
            and len(raw) == 3
            and isinstance(raw[0], str)
            and isinstance(raw[1], int)
            and not isinstance(raw[1], bool)
            and isinstance(raw[2], str)
        )
        if not valid:
            raise ValueError(
                f"{split_file}: entry {split}[{index}] {json.dumps(raw)} is not [relative_path, label, classname]"
            )
        if raw[2] in fixes.ignored:
            continue
        entry = _Entry(split, index, raw, raw[0], raw[1], fixes.apply(raw[2]))
        if entry.label < 0:
            raise ValueError(f"{entry.describe(split_file)} has a negative label")
        entries.append(entry)
    return entries


def _class_list(split_file: str | os.PathLike, train: list[_Entry]) -> dict[int, str]:
    names: dict[int, _Entry] = {}
    for entry in train:
        first = names.setdefault(entry.label, entry)
        if first.classname != entry.classname:
            raise ValueError(
                f"{entry.describe(split_file)} names class {entry.classname!r}, but label {entry.label} is "
                f"{first.classname!r} in entry train[{first.index}]"
            )
    if not names:
        raise ValueError(f"{split_file} has no train entries, so no class list")
    return {label: names[label].classname for label in sorted(names)}


def read_split_zhou(
    split_file: str | os.PathLike, image_dir: str | os.PathLike, fixes: ClassnameFixes = NO_FIXES
) -> LabeledFiles:
    """Read a split_zhou file into absolute image paths and labels, with the class names fixed.

    The class list is the train split's labels in ascending order, renumbered 0..N-1 (the released split
    files already use 0..N-1, so their labels are kept). Entries of ``fixes.ignored`` classes are dropped.
    An entry whose label is not in the class list, or whose class name disagrees with its label, raises a
    ``ValueError`` naming the entry. File existence is not checked here.
    """
    data = _load_json(split_file)
    entries = {split: _parse_entries(split_file, split, data[split], fixes) for split in SPLITS}
    label_names = _class_list(split_file, entries["train"])
    relabel = {label: new for new, label in enumerate(label_names)}
    image_dir = os.path.abspath(os.path.expanduser(image_dir))
    splits: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        for entry in entries[split]:
            if entry.label not in label_names:
                raise ValueError(
                    f"{entry.describe(split_file)} has label {entry.label}, outside the class list "
                    f"(the {len(label_names)} labels of the train split, "
                    f"{min(label_names)}..{max(label_names)})"
                )
            if label_names[entry.label] != entry.classname:
                raise ValueError(
                    f"{entry.describe(split_file)} names class {entry.classname!r}, but label {entry.label} "
                    f"is {label_names[entry.label]!r} in the class list"
                )
        splits[split] = [(os.path.join(image_dir, e.path), relabel[e.label]) for e in entries[split]]
    return LabeledFiles(classnames=list(label_names.values()), splits=splits)


def split_file_classnames(split_file: str | os.PathLike, fixes: ClassnameFixes = NO_FIXES) -> list[str]:
    """The fixed class names a split_zhou file defines, in label order; no image needs to exist."""
    return read_split_zhou(split_file, ".", fixes).classnames

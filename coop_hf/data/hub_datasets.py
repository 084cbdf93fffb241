"""Loading any ``datasets`` image-classification dataset (Hub id or local folder) into CoOp's split layout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import datasets
from datasets.exceptions import DatasetNotFoundError

from .. import hub_access
from ..cli import did_you_mean
from ..hub_access import HubUnavailableError, is_local, is_offline, why_unreachable
from .benchmarks import BENCHMARKS, LAYOUT_DOC, load_benchmark
from .templates import templates_for

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
"""Source split names recognised for each of "train", "val" and "test", in order of preference."""


def _load_raw(name_or_path: str, data_dir: str | None, load_kwargs: dict[str, Any]) -> datasets.DatasetDict:
    local = os.path.expanduser(name_or_path)
    saved = os.path.isfile(os.path.join(local, "dataset_dict.json")) or os.path.isfile(
        os.path.join(local, "state.json")
    )
    if saved:
        loaded = datasets.load_from_disk(local)
    else:
        source = local if os.path.isdir(local) else name_or_path
        loaded = datasets.load_dataset(source, data_dir=data_dir, **load_kwargs)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
    return loaded


def _find_column(features: datasets.Features, kind: type, preferred: str, requested: str | None) -> str:
    matches = [name for name, feature in features.items() if isinstance(feature, kind)]
    kind_name = f"datasets.{kind.__name__}"
    if requested is not None:
        if requested not in matches:
            raise ValueError(f"Column {requested!r} is not a {kind_name} column; {kind_name} columns: {matches}")
        return requested
    if not matches:
        raise ValueError(f"No {kind_name} column in the dataset; its features are {dict(features)}")
    if len(matches) == 1:
        return matches[0]
    if preferred in matches:
        return preferred
    raise ValueError(f"Several {kind_name} columns {matches}; choose one with the column argument")


def _map_splits(available: list[str], split_map: Mapping[str, str], name: str) -> dict[str, str]:
    unknown = [source for source in split_map.values() if source not in available]
    if unknown:
        raise ValueError(f"split_map names split(s) {unknown} that {name} does not have; it has {available}")
    mapping = {}
    for target, aliases in SPLIT_ALIASES.items():
        source = split_map.get(target) or next((alias for alias in aliases if alias in available), None)
        if source is not None:
            mapping[target] = source
    for needed in ("train", "test"):
        if needed not in mapping:
            raise ValueError(
                f"{name} has no {needed} split (its splits: {available}); "
                f"pass split_map={{{needed!r}: '<split name>'}} to use another split as {needed}"
            )
    return mapping


def load_image_classification(
    name_or_path: str,
    *,
    data_dir: str | None = None,
    split_map: Mapping[str, str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    **load_kwargs: Any,
) -> datasets.DatasetDict:
    """Load an image-classification dataset as splits "train", "test" and, where it has one, "val".

    ``name_or_path`` is a Hub id, a local folder ``datasets.load_dataset`` understands (e.g. an imagefolder
    of class folders), or a folder written by ``save_to_disk``. The ``datasets.Image`` column becomes
    "image" and the ``datasets.ClassLabel`` column "label" (other columns are dropped); class names get
    underscores replaced by spaces. "validation"/"valid"/"dev" map to "val"; ``split_map`` (e.g.
    ``{"test": "validation"}``) overrides. Without a val split, ``build_few_shot_splits`` carves one
    from train; without a test split, a ``ValueError`` says so.
    """
    raw = _load_raw(name_or_path, data_dir, load_kwargs)
    mapping = _map_splits(list(raw), split_map or {}, name_or_path)
    features = raw[mapping["train"]].features
    image = _find_column(features, datasets.Image, "image", image_column)
    label = _find_column(features, datasets.ClassLabel, "label", label_column)
    names = features[label].names
    class_label = datasets.ClassLabel(names=[classname.replace("_", " ") for classname in names])
    splits = {}
    for target, source in mapping.items():
        split = raw[source]
        source_label = split.features.get(label)
        if not isinstance(source_label, datasets.ClassLabel) or source_label.names != names:
            raise ValueError(
                f"Split {source!r} of {name_or_path}: column {label!r} is {source_label!r}, not the "
                f"ClassLabel of split {mapping['train']!r}"
            )
        renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
        split = split.select_columns([image, label]).rename_columns(renames)
        splits[target] = split.cast_column("label", class_label)
    return datasets.DatasetDict(splits)


def load_dataset_splits(dataset: str, data_dir: str | None) -> tuple[datasets.DatasetDict, list[str], str]:
    """Load ``dataset`` and return (splits, class names, its hand-made template).

    A CoOp benchmark name with ``data_dir`` loads the on-disk benchmark (``load_benchmark``); anything else is a
    Hub id or local path for ``load_image_classification``. ``data_dir`` with another name, a benchmark name
    without ``data_dir``, an unknown name and a Hub id while the Hub cannot be reached each raise an error that
    says which flag (``--dataset`` / ``--data_dir``) to change, at once rather than after the Hub's retries.
    """
    if data_dir is not None:
        if dataset not in BENCHMARKS:
            raise ValueError(
                f"--data_dir is the folder of the CoOp benchmarks, but --dataset {dataset!r} is not one of them "
                f"({', '.join(BENCHMARKS)}).{did_you_mean(dataset, BENCHMARKS)} Give a benchmark name, or drop "
                "--data_dir and pass the dataset's own folder or Hub id as --dataset."
            )
        splits = load_benchmark(dataset, data_dir)
    else:
        splits = _load_hub_or_local(dataset)
    first = next(iter(splits.values()))
    return splits, list(first.features["label"].names), templates_for(dataset)


def _load_hub_or_local(dataset: str) -> datasets.DatasetDict:
    if dataset in BENCHMARKS and not is_local(dataset):
        hint = (
            f"{dataset!r} is a CoOp benchmark: pass --data_dir, the folder holding {BENCHMARKS[dataset].folder}/ in "
            f"the CoOp layout ({LAYOUT_DOC})."
        )
    else:
        hint = (
            f"--dataset takes a CoOp benchmark name with --data_dir ({', '.join(BENCHMARKS)}); anything else is "
            f"loaded with datasets.load_dataset as a Hub id or local folder.{did_you_mean(dataset, BENCHMARKS)}"
        )
    if not is_local(dataset) and not is_offline() and not hub_access.hub_is_reachable():
        raise HubUnavailableError(
            f"--dataset {dataset!r} is not a local folder and {why_unreachable()}. {hint} To use a copy in the "
            "datasets cache, set HF_HUB_OFFLINE=1."
        )
    try:
        return load_image_classification(dataset)
    except (ConnectionError, FileNotFoundError, DatasetNotFoundError) as err:
        where = f" and {why_unreachable()}" if not hub_access.hub_is_reachable() else ""
        raise HubUnavailableError(f"--dataset {dataset!r} could not be loaded{where}: {err}\n{hint}") from None

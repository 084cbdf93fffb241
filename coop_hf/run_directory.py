"""An output directory that knows the configuration it holds, so a resumed or repeated run can never report
another configuration's results under its own labels.

The first run writes `run_config.json` (everything that changes the results, resolved: the model's actual prompt
settings, the epochs, the dataset's split fingerprint, the package version). A later run into the same directory
goes on only with the same configuration; otherwise it stops before any work with the differing fields listed, and
`--overwrite_output_dir` starts afresh after removing what the old run wrote.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import datasets

from .atomic import atomic_write_text
from .data.records import column_values

RUN_CONFIG_NAME = "run_config.json"
# What a run writes into its directory; `--overwrite_output_dir` removes exactly these (never the user's files).
RUN_OUTPUTS = ("results.json", "results.md", "results.csv", "*.png", "seed[0-9]*", "checkpoint-*", "ensemble")


UNWRITABLE = "{flag} {value!r} cannot be written ({reason}: {where}): pass a folder you can write to."
"""The refusal of an output folder this process cannot write in (also checked before torch loads:
`coop_hf.runners.settings.QUICK_PATHS`)."""


class RunConfigMismatchError(ValueError):
    """The output directory holds a run of another configuration."""


def check_writable(directory: str | os.PathLike, flag: str = "--output_dir") -> None:
    """Raise a `ValueError` naming `flag` unless this process can write in `directory`, or create it: a folder is
    made and removed in it (or in the deepest folder above it that exists), so nothing is left behind."""
    path = Path(directory).expanduser().absolute()
    where = next(folder for folder in (path, *path.parents) if folder.exists())
    try:
        if not where.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.rmdir(tempfile.mkdtemp(prefix=".coop-hf-write-check-", dir=where))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(UNWRITABLE.format(flag=flag, value=str(directory), reason=reason, where=where)) from None


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per differing field: "name: recorded value (in the directory) -> value now"."""
    old, new = flatten(recorded), flatten(json.loads(json.dumps(current)))
    return [
        f"{key}: {json.dumps(old.get(key))} (in the directory) -> {json.dumps(new.get(key))} (now)"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _run_outputs(directory: Path) -> list[Path]:
    return sorted({path for pattern in RUN_OUTPUTS for path in directory.glob(pattern)})


def check_run_directory(directory: str | os.PathLike, config: dict[str, Any], *, overwrite: bool = False) -> bool:
    """What `claim_run_directory` would do, with nothing written: True when `directory` holds a run of `config`,
    False when it is new or would be overwritten; a `ValueError` when it cannot be written, a
    `RunConfigMismatchError` when it holds another configuration's run (or results with no recorded configuration)
    and not `overwrite`."""
    directory = Path(directory)
    check_writable(directory)
    record = directory / RUN_CONFIG_NAME
    recorded = json.loads(record.read_text()) if record.is_file() else None
    if recorded is not None and not config_differences(recorded, config):
        return True
    outputs = _run_outputs(directory) if directory.is_dir() else []
    if (recorded is not None or outputs) and not overwrite:
        if recorded is None:
            problem = f"{directory} holds results of a run whose configuration was not recorded ({outputs[0].name})\n"
        else:
            listed = "\n  ".join(config_differences(recorded, config))
            problem = f"{directory} holds a run of another configuration:\n  {listed}\n"
        raise RunConfigMismatchError(
            f"{problem}Its results would be reported under this run's settings. Pass a new --output_dir, or "
            "--overwrite_output_dir to start afresh (it removes that run's results, prompts and checkpoints)."
        )
    return False


def claim_run_directory(directory: str | os.PathLike, config: dict[str, Any], *, overwrite: bool = False) -> bool:
    """Make `directory` hold a run of `config`, before any work is done.

    Returns True when the directory already held a run of this configuration (its finished seeds and checkpoints
    may be reused), False for a new or overwritten directory. Raises as `check_run_directory` does; with
    `overwrite`, another configuration's run has its outputs (results, prompts, checkpoints, plots) removed, and
    `config` is recorded.
    """
    if check_run_directory(directory, config, overwrite=overwrite):
        return True
    directory = Path(directory)
    for path in _run_outputs(directory) if directory.is_dir() else []:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    atomic_write_text(directory / RUN_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return False


def splits_fingerprint(splits: datasets.DatasetDict) -> str:
    """A fingerprint of the class list and of every split's images and labels.

    Files on disk are identified by their paths relative to the folder that holds all of them, so moving a
    dataset keeps its fingerprint; other datasets use their `datasets` fingerprint.
    """
    digest = hashlib.sha256()
    first = next(iter(splits.values()))
    digest.update(json.dumps(first.features["label"].names).encode())
    with_paths = [name for name, split in splits.items() if "image_path" in split.column_names]
    paths = {name: column_values(splits[name], "image_path") for name in with_paths}
    root = os.path.commonpath([path for split_paths in paths.values() for path in split_paths]) if paths else ""
    for name in sorted(splits):
        split = splits[name]
        digest.update(name.encode())
        if name in paths:
            relative = [os.path.relpath(path, root) for path in paths[name]]
            digest.update(json.dumps([relative, column_values(split, "label")]).encode())
        else:
            digest.update(split._fingerprint.encode())
    return digest.hexdigest()[:16]

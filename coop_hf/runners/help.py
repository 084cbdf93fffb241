"""The example scripts' help: a short page of the common flags (`--help`), each method's settings on request
(`--help <method>`), every flag (`--help all`, HfArgumentParser's own page)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from ..cli import did_you_mean
from ..methods.recipes import PROTOCOLS, recipe_row
from ..run_directory import check_writable
from ..training import CoOpTrainingArguments
from .arguments import PromptArguments, setting_help
from .methods import METHOD_NAMES, PROMPT_METHODS
from .settings import QUICK_BOUNDS, QUICK_NEEDS, QUICK_PATHS

COMMON_TRAINING_FLAGS = (
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "cached_views", "eval_strategy", "bf16", "fp16", "resume_from_checkpoint", "overwrite_output_dir",
    "push_to_hub", "hub_model_id",
)  # fmt: skip
"""The training flags the short page shows; `--help all` lists every `TrainingArguments` flag."""
OWN_WORDS = {
    "output_dir": "The run directory: results.json, run_config.json and one prompt folder per seed.",
    "resume_from_checkpoint": "true: continue the run in --output_dir (finished seeds kept, an interrupted one from "
    "its last checkpoint).",
    "eval_strategy": "epoch: accuracy on the few-shot validation split after every epoch (the reported prompt stays "
    "the last one).",
}
"""What these flags do in coop-hf's scripts, where `TrainingArguments`' own help says something more generic."""
WIDTH = 100
PROTOCOL_STUDIES = {
    "few_shot": "train.py, sweep.py, train_noisy.py",
    "base_to_new": "base_to_new.py",
    "cross_dataset": "transfer.py",
    "domain_generalization": "transfer.py from imagenet to its variants",
}
"""The example scripts that run each protocol."""


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _entry(name: str, help_text: str, default: Any) -> str:
    """One flag: its name, then its help and default, wrapped."""
    text = " ".join(help_text.split())
    if default not in (None, "", [], False) and "default" not in text.lower():
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        text += f" (default: {shown})"
    body = textwrap.fill(text, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return f"  --{name}\n{body}"


def _fill(text: str, indent: int) -> str:
    """`text` wrapped at `WIDTH`, indented by 6 (the following lines by `indent`); paths and flags kept whole."""
    return textwrap.fill(
        text, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * indent, break_long_words=False,
        break_on_hyphens=False,
    )  # fmt: skip


def _field_entry(field: dataclasses.Field, help_text: str | None = None) -> str:
    """`_entry` of a dataclass field, with its own help unless `help_text` replaces it."""
    return _entry(field.name, field.metadata.get("help", "") if help_text is None else help_text, _default(field))


def quick_help_page(prog: str, description: str, dataclass_types: tuple[type, ...]) -> str:
    """The page `prog --help` prints: the description, every flag of the script's own argument classes (but the
    prompt settings and the training arguments), the common training flags, and where the rest is."""
    own = [kind for kind in dataclass_types if kind not in (PromptArguments, CoOpTrainingArguments)]
    lines = [f"usage: {prog} [flags]", "", description.strip(), ""]
    for kind in own:
        lines += [f"{kind.__name__}:", *(_field_entry(field) for field in dataclasses.fields(kind)), ""]
    if CoOpTrainingArguments in dataclass_types:
        fields = {field.name: field for field in dataclasses.fields(CoOpTrainingArguments)}
        lines += ["Training (any TrainingArguments flag works):"]
        lines += [_field_entry(fields[name], OWN_WORDS.get(name)) for name in COMMON_TRAINING_FLAGS]
        lines += [""]
    if PromptArguments in dataclass_types:
        lines += [
            "Each method's own settings (--n_ctx, --ctx_init, --prompt_depth, ...) and recipe:",
            f"  {prog} --help <method>, <method> one of",
            textwrap.fill(", ".join(PROMPT_METHODS), WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6),
        ]
    if len(own) < len(dataclass_types):  # flags the page leaves out
        lines += [f"Every flag: {prog} --help all"]
    return "\n".join(lines).rstrip("\n") + "\n"


UNKNOWN_HELP = "--help {name!r}: not a prompt method; use one of {methods}, or all."
NO_SETTINGS = "--method {name} has no settings of its own: its flags are in --help.\n"


def method_help_pages() -> dict[str, Any]:
    """What `--help <name>` prints for every `--method` name ("pages"), and the refusal of another name
    ("unknown", with `{name}`): written to `examples/help/methods.json`, so the scripts answer before torch loads."""
    pages = {name: method_help_page(name) for name in METHOD_NAMES}
    unknown = UNKNOWN_HELP.replace("{methods}", ", ".join(PROMPT_METHODS))
    return {"folders": method_folders(), "pages": pages, "unknown": unknown}


def method_folders(methods_dir: str | os.PathLike | None = None) -> list[str]:
    """The method folders of `coop_hf/methods` (those with an `__init__.py`), by name: what the generated help pages
    were made from, so that the scripts answer from them only while no folder was added or removed."""
    methods_dir = Path(methods_dir or Path(__file__).resolve().parents[1] / "methods")
    return sorted(path.parent.name for path in methods_dir.glob("*/__init__.py"))


def method_help_page(name: str) -> str:
    """`--help <method>`: the method's prompt settings (flags) with its defaults, and its recipe (a baseline: that
    it has none)."""
    if name in METHOD_NAMES and name not in PROMPT_METHODS:
        return NO_SETTINGS.format(name=name)
    if name not in PROMPT_METHODS:
        raise ValueError(
            UNKNOWN_HELP.format(name=name, methods=", ".join(PROMPT_METHODS)) + did_you_mean(name, PROMPT_METHODS)
        )
    method = PROMPT_METHODS[name]
    config_class = method.model_class.config_class
    defaults = {field.name: _default(field) for field in dataclasses.fields(config_class)}
    defaults |= method.defaults | method.settings
    lines = [f"--method {name}: {method.display_name} ({method.model_class.paper[0]})", "", "Settings:"]
    lines += [
        _entry(setting, setting_help(config_class, setting), defaults[setting])
        for setting in config_class.prompt_settings()
    ]
    lines += ["", "Recipe per protocol (each study applies its own; flags given win):"]
    for protocol, title in PROTOCOLS.items():
        values, source = recipe_row(method.recipes, protocol)
        lines += [
            f"  {title} ({PROTOCOL_STUDIES[protocol]}):",
            _fill(values or "CoOp's defaults (see --help)", 6),
            _fill(f"from {source}", 8),
        ]
    return "\n".join(lines) + "\n"


def recipe_table() -> str:
    """The README's method x protocol table: each recipe's values and the official config it comes from."""
    lines = ["| Method | Protocol | Recipe | Official source |", "|---|---|---|---|"]
    for name, method in PROMPT_METHODS.items():
        for protocol, title in PROTOCOLS.items():
            values, source = recipe_row(method.recipes, protocol)
            cells = [f"`{name}`", title, values or "CoOp's defaults", source]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def flag_names(dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """What the scripts check before torch loads: every option string of the parser of `dataclass_types` ("flags"),
    the names `--method` may take ("methods"; none without the flag: a study that trains prompts only refuses the
    baselines later, with its own message) and, per numeric or choice flag, its type, choices and bounds ("values",
    with `settings.QUICK_BOUNDS`), the path flags with their rule ("paths", `settings.QUICK_PATHS`) and the flags that
    need another ("needs", `settings.QUICK_NEEDS`)."""
    parser = HfArgumentParser(dataclass_types)
    flags = sorted(option for action in parser._actions for option in action.option_strings if option.startswith("--"))
    takes_method = any(field.name == "method" for kind in dataclass_types for field in dataclasses.fields(kind))
    values, paths = {}, {}
    for action in parser._actions:
        many = action.nargs in ("+", "*")
        if action.dest in QUICK_PATHS and action.option_strings:
            paths[action.option_strings[0]] = QUICK_PATHS[action.dest] | {"many": many}
        kind = {int: "int", float: "float"}.get(action.type)
        if kind is None and not action.choices:
            continue
        entry = {"type": kind or "str", "many": many}
        entry |= {"choices": list(action.choices)} if action.choices else {}
        values[action.option_strings[0]] = entry | QUICK_BOUNDS.get(action.dest, {})
    needs = {f"--{name}": rule | {"needs": f"--{rule['needs']}"} for name, rule in QUICK_NEEDS.items()}
    needs = {flag: rule for flag, rule in needs.items() if flag in flags and rule["needs"] in flags}
    methods = list(METHOD_NAMES) if takes_method else []
    return {"flags": flags, "methods": methods, "values": values, "paths": paths, "needs": needs}


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help all`: a flag's default after its help, unless the help says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, "", [], False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def parse_flags(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """`HfArgumentParser(dataclass_types).parse_args_into_dataclasses(argv)`, after answering `--help all` or
    `--help <method>` (printed, then exit status 0); then the folders the script writes in (`--output_dir`,
    `--feature_cache_dir`, defaults included) are checked, so one it cannot write stops it before any work."""
    parser = HfArgumentParser(dataclass_types, formatter_class=DefaultsHelpFormatter)
    argv = sys.argv[1:] if argv is None else argv
    page = help_request(argv, parser)
    if page is not None:
        sys.stdout.write(page)
        raise SystemExit(0)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    writable = [name for name, rule in QUICK_PATHS.items() if rule["check"] == "writable"]
    for arguments in parsed:
        for name in writable:
            if getattr(arguments, name, None):
                check_writable(getattr(arguments, name), flag=f"--{name}")
    return parsed


def help_request(argv: list[str], parser: HfArgumentParser) -> str | None:
    """The page `--help all` or `--help <method>` asks for, else None (the short `--help` is printed before the
    script imports anything: `examples/quick_help.py`)."""
    if len(argv) != 2 or argv[0] not in ("-h", "--help"):
        return None
    if argv[1] == "all":
        return parser.format_help()
    if "method" not in {action.dest for action in parser._actions}:
        raise ValueError(f"{parser.prog} takes no --method: --help {argv[1]} has no page (see {parser.prog} --help)")
    return method_help_page(argv[1])

"""What every script answers at once, before torch and transformers load (about 7 s on a small machine): `--help`
(the page `examples/help/<script>.txt`), `--help <method>` (`examples/help/methods.json`); a flag no definition
starts with, a `--method` that is none, a value of the wrong type, not among the flag's choices or out of its
bounds, a folder that does not exist or a value that cannot name a model, a folder the script could not write in
(from `examples/help/<script>.json`: every flag, method name, value and path rule). These files are generated from
the definitions (`coop_hf.runners.help`) by `python examples/quick_help.py`, and the tests check them against them.
`--help all` is answered by the scripts themselves (`coop_hf.runners.help.parse_flags`); everything else is checked
by the full parser."""

from __future__ import annotations

import difflib
import errno
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
PAGES = EXAMPLES / "help"
SCRIPTS = (
    "train", "sweep", "compare_protocols", "base_to_new", "transfer", "train_noisy", "train_upl", "evaluate_prompt",
    "interpret_prompt", "app", "make_tiny_clip",
)  # fmt: skip


def answer_at_once(script: str, argv: list[str] | None = None) -> None:
    """Print the script's page and exit when its command line is just -h or --help; exit with status 2 and one
    line on a flag that no flag of the script starts with (argparse would refuse it too), a --method that is none,
    or a value the flag's rule refuses."""
    argv = sys.argv[1:] if argv is None else argv
    name = Path(script).stem
    if _pages_are_stale():
        return  # a method folder was added or removed since the pages were generated: the full parser answers
    if argv in (["-h"], ["--help"]):
        sys.stdout.write((PAGES / f"{name}.txt").read_text(encoding="utf-8"))
        raise SystemExit(0)
    known = json.loads((PAGES / f"{name}.json").read_text(encoding="utf-8"))
    if len(argv) == 2 and argv[0] in ("-h", "--help") and argv[1] != "all":
        if not known["methods"]:
            _refuse(f"{name}.py takes no --method: --help {argv[1]} has no page (see {name}.py --help)")
        methods = json.loads((PAGES / "methods.json").read_text(encoding="utf-8"))
        if argv[1] not in methods["pages"]:
            _refuse(methods["unknown"].format(name=argv[1]) + _did_you_mean(argv[1], methods["pages"]))
        sys.stdout.write(methods["pages"][argv[1]])
        raise SystemExit(0)
    if any(word in ("-h", "--help") for word in argv):
        return  # --help all: the script's own parser
    for index, word in enumerate(argv):
        flag = word.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        if not any(option.startswith(flag) for option in known["flags"]):
            _refuse(f"unrecognized flag {flag} (see {name}.py --help)")
        values = [word.split("=", 1)[1]] if "=" in word else _values(argv[index + 1 :])
        if flag == "--method" and known["methods"]:
            for value in values:
                if value.partition(":")[0] not in known["methods"]:  # a study's variant: "coop:n_ctx=4"
                    close = _did_you_mean(value, known["methods"])
                    _refuse(f"unknown --method {value!r}: use one of {', '.join(known['methods'])}.{close}")
        if flag in known["values"]:
            for value in values if known["values"][flag]["many"] else values[:1]:
                _check_value(flag, value, known["values"][flag])
        if flag in known["paths"]:
            for value in values if known["paths"][flag]["many"] else values[:1]:
                _check_path(value, known["paths"][flag])
    for flag, rule in known["needs"].items():
        value = _given(argv, flag)
        if value not in (None, *_ZEROS) and _given(argv, rule["needs"]) in (None, rule["default"]):
            _refuse(rule["message"].format(value=value))


_ZEROS = ("0", "0.0", "0.", ".0")


def _given(argv: list[str], flag: str) -> str | None:
    """The last value `flag` (written whole) is given on the command line, else None."""
    given = None
    for index, word in enumerate(argv):
        if word.startswith(f"{flag}="):
            given = word.split("=", 1)[1]
        elif word == flag and index + 1 < len(argv):
            given = argv[index + 1]
    return given


def _pages_are_stale() -> bool:
    """Whether `coop_hf/methods` holds other method folders than the generated pages were made from (found without
    importing the method folders, which load torch)."""
    spec = importlib.util.find_spec("coop_hf")
    if spec is None or not spec.submodule_search_locations:
        return True
    methods = Path(list(spec.submodule_search_locations)[0]) / "methods"
    folders = sorted(path.parent.name for path in methods.glob("*/__init__.py"))
    return folders != json.loads((PAGES / "methods.json").read_text(encoding="utf-8")).get("folders")


def _check_path(value: str, rule: dict) -> None:
    """Refuse a path its rule refuses (`coop_hf.runners.settings.QUICK_PATHS`): a "folder" that is none, an
    "exists" that does not, a "model" that is no folder and cannot name a model (written as a path, or with more
    than one / and no "scheme:"; a name is checked later), a "writable" folder this process cannot write in or
    create."""
    if rule["check"] == "writable":
        return _check_writable(value, rule)
    found = Path(value).expanduser().exists() if rule["check"] == "exists" else Path(value).expanduser().is_dir()
    written_as_path = value.startswith(("/", ".", "~"))
    named = value.count("/") <= 1 or ":" in value.split("/")[0]  # a Hub id, or a "scheme:..." name (open_clip's)
    if not found and not (rule["check"] == "model" and not written_as_path and named):
        _refuse(rule["message"].format(value=value))


def _check_writable(value: str, rule: dict) -> None:
    """`coop_hf.run_directory.check_writable`: make and remove a folder in the deepest existing folder of `value`."""
    path = Path(value).expanduser().absolute()
    where = next(folder for folder in (path, *path.parents) if folder.exists())
    try:
        if not where.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.rmdir(tempfile.mkdtemp(prefix=".coop-hf-write-check-", dir=where))
    except OSError as error:
        _refuse(rule["message"].format(value=value, reason=error.strerror or str(error), where=where))


def _did_you_mean(name: str, names) -> str:
    """`coop_hf.cli.did_you_mean`."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_value(flag: str, value: str, rule: dict) -> None:
    """Refuse a value of the wrong type, not among the flag's choices, or out of its bounds (`QUICK_BOUNDS`)."""
    if "choices" in rule and value not in rule["choices"]:
        _refuse(f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(rule['choices'])})")
    if rule["type"] == "str":
        return
    try:
        number = {"int": int, "float": float}[rule["type"]](value)
    except ValueError:
        _refuse(f"argument {flag}: invalid {rule['type']} value: {value!r}")
    if (
        ("min" in rule and number < rule["min"])
        or ("max" in rule and number > rule["max"])
        or ("below" in rule and number >= rule["below"])
        or ("above" in rule and number <= rule["above"])
    ):
        _refuse(rule["message"].format(value=value))


def _values(words: list[str]) -> list[str]:
    values = []
    for word in words:
        if word.startswith("--"):
            break
        values.append(word)
    return values


def _refuse(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"_help_{script}", EXAMPLES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses need it
    spec.loader.exec_module(module)
    return module


def render(script: str) -> str:
    """The page of `examples/<script>.py`, from its docstring and its `ARGUMENTS`."""
    from coop_hf.runners.help import quick_help_page

    module = _load(script)
    return quick_help_page(f"{script}.py", module.__doc__, module.ARGUMENTS)


def render_names(script: str) -> str:
    """Every flag of `examples/<script>.py`, the names its --method takes and the checks of its values, as JSON."""
    from coop_hf.runners.help import flag_names

    return json.dumps(flag_names(_load(script).ARGUMENTS), indent=1) + "\n"


def render_method_pages() -> str:
    """What `--help <method>` prints for every method name, and the refusal of another name, as JSON."""
    from coop_hf.runners.help import method_help_pages

    return json.dumps(method_help_pages(), indent=1) + "\n"


if __name__ == "__main__":
    PAGES.mkdir(exist_ok=True)
    (PAGES / "methods.json").write_text(render_method_pages(), encoding="utf-8")
    print("examples/help/methods.json")
    for name in SCRIPTS:
        (PAGES / f"{name}.txt").write_text(render(name), encoding="utf-8")
        (PAGES / f"{name}.json").write_text(render_names(name), encoding="utf-8")
        print(f"examples/help/{name}.txt, .json")

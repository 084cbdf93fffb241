"""`--help` of the study scripts, printed at once: before torch and transformers load (about 5 s on a small
machine). Each page, `examples/help/<script>.txt`, is generated from the flags' definitions
(`coop_hf.runners.help.quick_help_page`) by `python examples/quick_help.py`, and the tests check it against them.
`--help <method>` and `--help all` are answered by the scripts themselves (`coop_hf.runners.help.parse_flags`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
PAGES = EXAMPLES / "help"
SCRIPTS = ("train", "sweep", "base_to_new", "transfer", "train_noisy", "train_upl")


def print_quick_help(script: str) -> None:
    """Print the script's page and exit when its command line is just -h or --help."""
    if sys.argv[1:] in (["-h"], ["--help"]):
        sys.stdout.write((PAGES / f"{Path(script).stem}.txt").read_text(encoding="utf-8"))
        raise SystemExit(0)


def render(script: str) -> str:
    """The page of `examples/<script>.py`, from its docstring and its `ARGUMENTS`."""
    from coop_hf.runners.help import quick_help_page

    spec = importlib.util.spec_from_file_location(f"_help_{script}", EXAMPLES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses need it
    spec.loader.exec_module(module)
    return quick_help_page(f"{script}.py", module.__doc__, module.ARGUMENTS)


if __name__ == "__main__":
    PAGES.mkdir(exist_ok=True)
    for name in SCRIPTS:
        (PAGES / f"{name}.txt").write_text(render(name), encoding="utf-8")
        print(f"examples/help/{name}.txt")

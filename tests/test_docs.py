"""The documentation: the site builds with warnings as errors, the method pages show the recipes that
`recipe_table()` prints, the README's links resolve, and every documented command of README.md and docs/ runs on
the tiny CLIP, its tables equal to what it writes (the rules: docs/contributing.md, "Documented commands").

`python tests/test_docs.py` rewrites the method pages' recipe tables from `recipe_table()`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if __name__ == "__main__":  # `python tests/test_docs.py`: the conftest's paths without pytest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import DATA, REPO, SHARED, VIT_B32, load_example

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", DOCS / "getting-started.md"] + sorted(
    page for page in DOCS.rglob("*.md") if page.name != "getting-started.md"
)
TINY_CLIP = "outputs/tiny-random-clip"  # what the quick start's make_tiny_clip.py writes
MINI_DATASETS = {"caltech101", "oxford_flowers"}  # the mini CoOp benchmarks of ../shared/data
# the scripts that take a backbone
MODEL_SCRIPTS = {"train", "sweep", "compare_protocols", "base_to_new", "transfer", "train_noisy", "train_upl"}
DATASET_FLAGS = ("--dataset", "--source", "--targets")
HUB_FLAGS = ("--prompt", "--prompts", "--pseudo_label_models", "--dataset", "--tokenizer_from", None)
FAMILY_IDS = {  # Hub id prefix -> the family of the tiny model that stands in for it
    "openai/clip-": "clip",
    "facebook/metaclip-2": "metaclip_2",
    "google/siglip2-base-patch16-naflex": "siglip2",
    "google/siglip": "siglip",
}
DEEP_PROMPT_DEPTHS = {  # the tiny models have two layers per tower
    "maple": ("--prompt_depth",),
    "ivlp": ("--prompt_depth_text", "--prompt_depth_vision"),
    "promptsrc": ("--prompt_depth_text", "--prompt_depth_vision"),
}
OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_STAND_INS = ("RN50", "ViT-B-32")  # the architectures tests/test_open_clip.py shrinks
AUGMENTED_VIEWS_METHODS = {"tip-adapter", "tip-adapter-f", "clap", "zs-lp"}  # cache 10-20 views of each image
RECIPE_MARKER = re.compile(r"^<!-- recipe table: (.+?) -->\n", re.M)
OUTPUT_MARKER = re.compile(r"<!-- output of the command above: (\S+) -->\n((?:\|.*\n)+)")
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


# -- the method pages' recipe tables -------------------------------------------------------------------------------


def recipe_rows(names: list[str]) -> str:
    """The header of `recipe_table()` and its rows of the methods `names`."""
    from coop_hf.runners.help import recipe_table

    header, rule, *rows = recipe_table().splitlines()
    keep = [row for row in rows if names == ["all"] or row.split(" | ")[0].removeprefix("| ").strip("`") in names]
    return "\n".join([header, rule, *keep]) + "\n"


def recipe_markers(text: str) -> list[tuple[re.Match, list[str], str]]:
    """Each `<!-- recipe table: a, b -->` marker, its method names and the table that follows it."""
    found = []
    for marker in RECIPE_MARKER.finditer(text):
        names = [name.strip() for name in marker.group(1).split(",")]
        table = re.match(r"(?:\|.*\n)*", text[marker.end() :]).group(0)
        found.append((marker, names, table))
    return found


def write_recipe_tables() -> None:
    for page in sorted((DOCS / "methods").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for marker, names, table in reversed(recipe_markers(text)):
            start = marker.end()
            text = text[:start] + recipe_rows(names) + text[start + len(table) :]
        page.write_text(text, encoding="utf-8")


def test_method_pages_show_the_generated_recipe_tables():
    from coop_hf.runners.methods import PROMPT_METHODS

    shown = []
    for page in sorted((DOCS / "methods").glob("*.md")):
        for _, names, table in recipe_markers(page.read_text(encoding="utf-8")):
            expected = recipe_rows(names)
            assert table == expected, f"{page.name}: stale recipe table; run `python tests/test_docs.py`"
            shown += names if names != ["all"] else []
    assert sorted(shown) == sorted(PROMPT_METHODS), "every method's recipes on exactly one method page"


def command_after(heading: str, page: Path) -> str:
    """The first bash block after `heading` on `page`."""
    text = page.read_text(encoding="utf-8")
    return BASH_BLOCK.search(text, text.index(heading)).group(1).strip()


def test_the_set_up_and_test_commands_are_the_same_everywhere():
    """What the README and the getting-started page tell a newcomer to run is what CI runs."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for page in (REPO / "README.md", DOCS / "getting-started.md"):
        for heading in ("## Set up", "## Test"):
            assert command_after(heading, page) in ci, f"{page.name}, {heading}: not a line of .ci/run"


def test_readme_links_resolve():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    missing = [target for target in targets if "://" not in target and not (REPO / target).exists()]
    assert targets and not missing


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(REPO / "mkdocs.yml"),
        "-d",
        str(tmp_path),
    ]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
    assert (tmp_path / "methods" / "coop" / "index.html").is_file()
    assert "CoOpModel" in (tmp_path / "api" / "models" / "index.html").read_text(encoding="utf-8")


# -- the documented commands ---------------------------------------------------------------------------------------


@dataclass
class Command:
    page: str
    line: int
    script: str
    argv: list[str]
    text: str
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (file it writes, table the page shows)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def documented_commands(page: Path) -> list[Command]:
    """The `examples/<script>.py` commands of the page's bash blocks, in order, with the tables shown after them."""
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(REPO).as_posix()
    commands: list[Command] = []
    events = sorted([*BASH_BLOCK.finditer(text), *OUTPUT_MARKER.finditer(text)], key=lambda match: match.start())
    for event in events:
        if event.re is OUTPUT_MARKER:
            assert commands, f"{name}: a table marked as output with no command above it"
            commands[-1].outputs.append((event.group(1), event.group(2)))
            continue
        logical_lines, number = [], text.count("\n", 0, event.start(1)) + 1
        for raw in re.split(r"(?<!\\)\n", event.group(1)):
            logical_lines.append((number, raw.replace("\\\n", " ")))
            number += raw.count("\n") + 1
        for number, line in logical_lines:
            words = shlex.split(line.replace("$", "\\$"), comments=True)
            scripts = [index for index, word in enumerate(words) if re.fullmatch(r"examples/\w+\.py", word)]
            if scripts:
                index = scripts[0]
                script = words[index].removeprefix("examples/").removesuffix(".py")
                commands.append(Command(name, number, script, words[index + 1 :], line.split("#")[0].strip()))
    return commands


def flag_values(argv: list[str]) -> dict[str | None, list[str]]:
    """{flag: its values} of a command line (None: the words before the first flag)."""
    values: dict[str | None, list[str]] = {None: []}
    flag = None
    for word in argv:
        if word.startswith("--"):
            flag, _, value = word.partition("=")
            values[flag] = [value] if value else []
        else:
            values[flag].append(word)
    return values


def command_line(values: dict[str | None, list[str]]) -> list[str]:
    return [*values[None], *(word for flag, words in values.items() if flag for word in (flag, *words))]


def is_hub_id(value: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None and not value.startswith(("outputs/", "runs/"))


def plan(command: Command) -> tuple[list[str] | None, str]:
    """The command line the test runs (None: skipped) and how it relates to the documented one."""
    if command.script == "app":
        return None, "serves its page until stopped (tests/test_app.py drives it in a browser)"
    if "$" in command.text:
        return None, "needs its scheduler's variables"
    values = flag_values(command.argv)
    if "--push_to_hub" in values:
        return None, "pushes to the Hub"
    if any(word in ("-h", "--help") for word in command.argv):
        return command.argv, "as written"
    for flag in HUB_FLAGS:
        hub_ids = [value for value in values.get(flag, []) if is_hub_id(value)]
        if hub_ids:
            return None, f"needs the Hub ({', '.join(hub_ids)})"
    for flag, words in values.items():
        values[flag] = [str(SHARED / word.removeprefix("../shared/")) if word.startswith("../shared/") else word
                        for word in words]  # fmt: skip
    model = values.get("--model_name_or_path", [None])[0]
    if model and model.startswith("hf-hub:"):
        return None, "needs its checkpoint (network)"
    if model and model.startswith(OPEN_CLIP_PREFIX):
        if importlib.util.find_spec("open_clip") is None:
            return None, "needs the open_clip package"
        if open_clip_architecture(model) not in OPEN_CLIP_STAND_INS:
            return None, f"no tiny stand-in for {model}"
    adapted = "/data" in values.get("--data_dir", []) or (
        command.script in MODEL_SCRIPTS and (model is None or not model.startswith("outputs/"))
    )
    if adapted:
        if command.script in {"train", "train_upl", "train_noisy"} and "--dataset" not in values:
            return None, "needs the Hub (its default dataset)"
        if command.script in MODEL_SCRIPTS and not any(flag in values for flag in DATASET_FLAGS):
            return None, "needs CoOp's 11 datasets (its default)"
        values["--data_dir"] = [str(DATA)]
        for flag in ("--dataset", "--targets"):
            if flag in values:
                values[flag] = values[flag][:1]
        if "--seeds" in values:
            values["--seeds"] = values["--seeds"][:1]
        noisy = command.script == "train_noisy" or "--noise_type" in values
        if "--shots" in values or command.script in MODEL_SCRIPTS - {"train_upl"}:
            values["--shots"] = ["2" if noisy else "1"]
        if command.script == "train_noisy":
            values["--noise_rates"] = values.get("--noise_rates", ["0.5"])[-1:]
        if "--n_ctx_values" in values:
            values["--n_ctx_values"] = values["--n_ctx_values"][:1]
        if command.script in MODEL_SCRIPTS:
            values["--max_steps"] = ["2"]
            named = {word.split(":")[0] for flag in ("--method", "--study_methods") for word in values.get(flag, [])}
            for method in sorted(named & DEEP_PROMPT_DEPTHS.keys()):
                for flag in DEEP_PROMPT_DEPTHS[method]:
                    values.setdefault(flag, ["2"])
            if named & AUGMENTED_VIEWS_METHODS:
                values.setdefault("--augment_views", ["2"])
            values["--model_name_or_path"] = [family_model(model)]
        output = values.get("--output_dir", [f"cmd{command.line}"])[0]
        page = Path(command.page).with_suffix("").as_posix().replace("/", "-")
        values["--output_dir"] = [f"adapted/{page}/{output.lstrip('/')}"]
    missing = [word for word in values.get("--dataset", []) + values.get("--source", []) + values.get("--targets", [])
               if word not in MINI_DATASETS]  # fmt: skip
    if missing:
        return None, f"needs data the mini datasets do not have ({', '.join(missing)})"
    return command_line(values), "adapted to the tiny models" if adapted else "as written"


def open_clip_architecture(model: str) -> str:
    """What an `open_clip:<architecture>/<tag>` name builds: "RN50" of "open_clip:RN50-quickgelu/openai"."""
    return model.removeprefix(OPEN_CLIP_PREFIX).partition("/")[0].removesuffix("-quickgelu")


def family_model(model: str | None) -> str:
    """The tiny stand-in for a Hub checkpoint (its family's), in the workspace; for an open_clip name, a tiny random
    checkpoint of its architecture (`local-dir:family-models/open_clip-<architecture>`)."""
    if model is None:
        return TINY_CLIP
    if model.startswith(OPEN_CLIP_PREFIX):
        return f"local-dir:family-models/open_clip-{open_clip_architecture(model)}"
    for prefix, family in FAMILY_IDS.items():
        if model.startswith(prefix):
            return TINY_CLIP if family == "clip" else f"family-models/{family}"
    raise AssertionError(f"no tiny stand-in for --model_name_or_path {model}")


def run_documented(script: str, argv: list[str]) -> None:
    """The script as its command line runs it (`quick_help` first, then `main`), in-process."""
    import quick_help

    path = REPO / "examples" / f"{script}.py"
    try:
        quick_help.answer_at_once(str(path), argv)
        load_example(script).main(argv)
    except SystemExit as exit:  # --help pages
        assert exit.code in (0, None), f"{script}.py exited with {exit.code}"


def make_family_models(workspace: Path) -> None:
    """Tiny random MetaCLIP 2, SigLIP and SigLIP 2 folders, standing in for those Hub checkpoints, and open_clip's
    RN50 and ViT-B-32 where open_clip is installed."""
    from tiny_backbones import tiny_backbone

    from tests.test_backbones_e2e import PROCESSORS

    if importlib.util.find_spec("open_clip") is not None:
        from tests.test_open_clip import save_open_clip_checkpoint

        for architecture in OPEN_CLIP_STAND_INS:
            folder = workspace / "family-models" / f"open_clip-{architecture}"
            if not folder.exists():
                save_open_clip_checkpoint(architecture, folder)

    for family, processor in PROCESSORS.items():
        folder = workspace / "family-models" / family
        if not folder.exists():
            model, tokenizer = tiny_backbone(family)
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            processor().save_pretrained(folder)


def quick_start_commands() -> list[Command]:
    """The README's quick start: the commands that make the tiny CLIP and the prompt the other pages use."""
    commands = documented_commands(REPO / "README.md")
    quick = [command for command in commands if command.script in ("make_tiny_clip", "train")][:2]
    assert [command.script for command in quick] == ["make_tiny_clip", "train"]
    return quick


def unique_commands() -> list[Command]:
    seen = {f"{command.script} {' '.join(command.argv)}" for command in quick_start_commands()}
    commands = []
    for page in PAGES:
        for command in documented_commands(page):
            key = f"{command.script} {' '.join(command.argv)}"
            if key not in seen:
                seen.add(key)
                commands.append(command)
    return commands


COMMANDS = unique_commands() if DOCS.is_dir() else []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder in which the README's quick start ran: outputs/tiny-random-clip and the prompt outputs/try/seed1."""
    folder = tmp_path_factory.mktemp("docs-workspace")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for command in quick_start_commands():
            argv, how = plan(command)
            assert how == "as written", command.text
            run_documented(command.script, argv)
    finally:
        os.chdir(cwd)
    return folder


@pytest.mark.slow
def test_the_quick_start_writes_the_tiny_clip_and_a_prompt(workspace):
    assert (workspace / TINY_CLIP / "config.json").is_file()
    assert (workspace / "outputs" / "try" / "results.json").is_file()
    assert (workspace / "outputs" / "try" / "seed1" / "model.safetensors").is_file()
    assert (VIT_B32 / "tokenizer.json").is_file()  # what --tokenizer_from names


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[command.name for command in COMMANDS])
def test_documented_command_runs(command, workspace, monkeypatch):
    argv, how = plan(command)
    if argv is None:
        pytest.skip(f"{command.text}: {how}")
    if any(value.removeprefix("local-dir:").startswith("family-models/") for value in argv):
        make_family_models(workspace)
    monkeypatch.chdir(workspace)
    run_documented(command.script, argv)
    for path, table in command.outputs:
        written = (workspace / path).read_text(encoding="utf-8")
        assert table in written, f"{command.name}: the page's table is not what `{command.text}` wrote:\n{written}"


def test_the_commands_are_found_and_each_shown_table_follows_a_command_run_as_written():
    assert len(COMMANDS) >= 30
    for command in COMMANDS:
        if command.outputs:
            assert plan(command)[1] == "as written", f"{command.name}: a table shown after an adapted command"


if __name__ == "__main__":
    write_recipe_tables()

"""Adding a method is adding its folder: the "Adding a method" example of docs/contributing.md, written into a copy
of the repository and nothing else changed, is found by the CLI, `--help`, the Auto classes, `coop_hf`'s exports and
the built wheel."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO
from tests.test_packaging import build_wheel, copy_checkout

pytestmark = pytest.mark.slow


def documented_method_files() -> dict[str, str]:
    """The files of the documented example method (docs/contributing.md, "Adding a method"), by path: its code
    block cut at each "# coop_hf/methods/..." line."""
    guide = (REPO / "docs" / "contributing.md").read_text(encoding="utf-8")
    section = guide[guide.index("### Adding a method") :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    parts = re.split(r"^# (coop_hf/methods/\S+\.py)\n", block, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture(scope="module")
def repository_with_a_new_method(tmp_path_factory) -> Path:
    repository = copy_checkout(tmp_path_factory.mktemp("repository"))
    files = documented_method_files()
    assert set(files) == {
        f"coop_hf/methods/biased/{name}.py" for name in ("configuration_biased", "modeling_biased", "__init__")
    }
    for path, text in files.items():
        (repository / path).parent.mkdir(exist_ok=True)
        (repository / path).write_text(text, encoding="utf-8")
    return repository


def run(repository: Path, *command: str) -> str:
    """`command` run in the copy, whose coop_hf is imported (not the checkout's): its output, checked."""
    env = {"PYTHONPATH": str(repository), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(command, cwd=repository, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_new_folder_is_in_the_package_and_the_auto_classes(repository_with_a_new_method):
    code = (
        "import coop_hf; from transformers import AutoConfig; "
        "coop_hf.load_methods(); config = AutoConfig.for_model('biased-coop', classnames=['a', 'b']); "
        "print(coop_hf.__file__, type(config).__name__, 'biased-coop' in coop_hf.METHODS, "
        "coop_hf.BiasedCoOpModel.__name__, list(coop_hf.METHODS).index('biased-coop') == len(coop_hf.METHODS) - 1)"
    )
    location, config_name, registered, model_name, last = run(
        repository_with_a_new_method, sys.executable, "-c", code
    ).split()
    assert Path(location).is_relative_to(repository_with_a_new_method)
    assert (config_name, registered, model_name, last) == ("BiasedCoOpConfig", "True", "BiasedCoOpModel", "True")


def test_the_cli_and_its_help_know_the_new_method(repository_with_a_new_method, tiny_clip_dir, tmp_path):
    page = run(repository_with_a_new_method, sys.executable, "examples/train.py", "--help", "biased-coop")
    assert "--method biased-coop: Biased CoOp" in page and "--bias_init" in page
    listing = run(repository_with_a_new_method, sys.executable, "examples/train.py", "--help")
    assert "biased-coop" in listing
    run(
        repository_with_a_new_method, sys.executable, "examples/train.py", "--method", "biased-coop",
        "--model_name_or_path", str(tiny_clip_dir), "--dataset", "caltech101", "--data_dir", str(DATA),
        "--shots", "1", "--max_steps", "1", "--n_ctx", "2", "--output_dir", str(tmp_path / "run"),
        "--report_to", "none",
    )  # fmt: skip
    assert '"method": "biased-coop"' in (tmp_path / "run" / "results.json").read_text()


def test_the_built_wheel_packs_the_new_folder(repository_with_a_new_method, tmp_path):
    names = zipfile.ZipFile(build_wheel(repository_with_a_new_method, tmp_path)).namelist()
    assert {"coop_hf/methods/biased/__init__.py", "coop_hf/methods/biased/modeling_biased.py"} <= set(names)

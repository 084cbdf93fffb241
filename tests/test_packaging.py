"""The built wheel, not the editable checkout: every package folder is in it, and coop_hf imports from it alone."""

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import coop_hf
from coop_hf import METHODS
from tests.conftest import REPO


def copy_checkout(destination: Path) -> Path:
    """The checkout's tracked and unignored files, without build leftovers (setuptools reuses a stale build/)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def build_wheel(source: Path, folder: Path) -> Path:
    """The wheel `pip install <source>` would install (no dependencies, the installed setuptools)."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip_wheel, "-w", str(folder), str(source)], check=True)
    return next(folder.glob("coop_hf-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_imports_from_itself(tmp_path):
    source = copy_checkout(tmp_path / "checkout")
    wheel = build_wheel(source, tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(init.parent.relative_to(source) for init in (source / "coop_hf").rglob("__init__.py"))
    missing = [str(package) for package in packages if f"{package.as_posix()}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel: {missing}"
    assert "coop_hf/model_cards/prompt_model_card.md" in names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    # From another folder, with the wheel's copy first on the path: the checkout must play no part.
    location, method_count, export_count = run_python(
        "import coop_hf; print(coop_hf.__file__, len(coop_hf.METHODS), len(coop_hf.__all__))", target, tmp_path
    )
    assert Path(location).is_relative_to(target)
    assert (int(method_count), int(export_count)) == (len(METHODS), len(coop_hf.__all__))
    # The wheel itself, a zip on the path: the method folders' names are read without a file system.
    location, export_count = run_python(
        "import coop_hf; print(coop_hf.__file__, len(coop_hf.__all__))", wheel, tmp_path
    )
    assert Path(location).is_relative_to(wheel) and int(export_count) == len(coop_hf.__all__)


def run_python(code: str, path: Path, cwd: Path) -> list[str]:
    """The words `code` prints, run with `path` first on the import path."""
    env = {"PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_ci_stops_when_the_set_up_command_fails(tmp_path):
    """`.ci/run` exits with the set-up's status and runs nothing after it (`set -e` alone would go on: the set-up
    is an && list)."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for tool, status in (("pip", 3), ("python", 0)):
        (bin_folder / tool).write_text(
            f"#!/bin/sh\necho {tool} >> {shlex.quote(str(tmp_path / 'ran'))}\nexit {status}\n"
        )
        (bin_folder / tool).chmod(0o755)
    env = {"PATH": f"{bin_folder}:/usr/bin:/bin", "HOME": str(tmp_path)}
    completed = subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert completed.returncode == 3
    assert "the set-up command failed (exit status 3)" in completed.stderr
    assert (tmp_path / "ran").read_text().split() == ["pip"]

"""The scripts' help: a short page at once (before torch loads), each method's settings and every flag on
request; the short pages are generated from the flags' definitions and must match them."""

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, load_example

QUICK_HELP = load_example("quick_help")


@pytest.mark.parametrize("script", QUICK_HELP.SCRIPTS)
def test_each_short_page_is_the_one_its_flags_give(script):
    page = (REPO / "examples" / "help" / f"{script}.txt").read_text(encoding="utf-8")
    assert page == QUICK_HELP.render(script), f"stale: regenerate with python examples/quick_help.py ({script})"


def test_help_is_a_short_page_printed_at_once():
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), "--help"], capture_output=True, text=True, cwd="/"
    )
    elapsed = time.perf_counter() - start
    assert completed.returncode == 0 and completed.stdout == (REPO / "examples/help/train.txt").read_text()
    assert elapsed < 2.0 and len(completed.stdout.splitlines()) < 120
    assert "--help <method>" in completed.stdout and "--help all" in completed.stdout


def test_method_settings_and_every_flag_on_request(capsys):
    train = load_example("train")
    with pytest.raises(SystemExit) as done:
        train.main(["--help", "promptsrc"])
    assert done.value.code == 0
    page = capsys.readouterr().out
    assert page.startswith("--method promptsrc: PromptSRC") and "--gpa_mean" in page and "(default: 15.0)" in page
    assert "Recipe: --learning_rate 0.0025, --per_device_train_batch_size 4, --num_train_epochs 20" in page
    with pytest.raises(SystemExit):
        train.main(["--help", "all"])
    assert "--lr_scheduler_kwargs" in capsys.readouterr().out  # TrainingArguments' every flag
    with pytest.raises(ValueError, match="--help 'nope': not a prompt method"):
        train.main(["--help", "nope"])

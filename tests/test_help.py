"""The scripts' help: a short page at once (before torch loads), each method's settings and every flag on
request; the short pages are generated from the flags' definitions and must match them."""

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, load_example

QUICK_HELP = load_example("quick_help")


def test_the_method_pages_are_the_ones_the_methods_give():
    stale = "stale: regenerate with python examples/quick_help.py (methods.json)"
    assert (REPO / "examples" / "help" / "methods.json").read_text(
        encoding="utf-8"
    ) == QUICK_HELP.render_method_pages(), stale


@pytest.mark.parametrize("script", QUICK_HELP.SCRIPTS)
def test_each_short_page_and_flag_list_is_the_one_its_flags_give(script):
    stale = f"stale: regenerate with python examples/quick_help.py ({script})"
    folder = REPO / "examples" / "help"
    assert (folder / f"{script}.txt").read_text(encoding="utf-8") == QUICK_HELP.render(script), stale
    assert (folder / f"{script}.json").read_text(encoding="utf-8") == QUICK_HELP.render_names(script), stale


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus", "1"], "error: unrecognized flag --bogus (see train.py --help)"),
        (["--shots", "2", "--method=foo"], "error: unknown --method 'foo': use one of zeroshot, linear-probe, coop"),
        (["--shots", "-2"], "error: --shots takes the number of training images per class, at least 1; got -2 "),
        (["--seeds", "1", "two"], "error: argument --seeds: invalid int value: 'two'"),
        (["--noise_rate=1"], "error: --noise_rate is the fraction of noisy shots per class, in [0, 1); got 1."),
        (["--loss", "mse"], "error: argument --loss: invalid choice: 'mse' (choose from ce, gce)"),
        (["--data_dir", "/no/such/folder"], "error: --data_dir '/no/such/folder' is not a folder: give the folder"),
        (["--model_name_or_path", "./no-clip"], "error: --model_name_or_path './no-clip' is neither a folder nor a"),
    ],
)
def test_a_misspelt_flag_or_method_or_a_bad_value_is_refused_at_once(argv, message):
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), *argv], capture_output=True, text=True, cwd="/"
    )
    assert time.perf_counter() - start < 2.0
    assert completed.returncode == 2 and completed.stderr.startswith(message) and completed.stdout == ""


def test_what_the_quick_check_lets_through_is_left_to_the_parser(capsys):
    QUICK_HELP.answer_at_once("train.py", ["--num_train", "2", "--method", "coop", "--seeds", "1", "2"])  # a prefix
    QUICK_HELP.answer_at_once("sweep.py", ["--method", "zeroshot", "coop", "--shots", "1"])
    QUICK_HELP.answer_at_once("train.py", ["--help", "all"])
    QUICK_HELP.answer_at_once("train.py", ["--shots", "1", "--noise_rate", "0.5", "--gce_q", "1", "--loss", "gce"])
    QUICK_HELP.answer_at_once("train.py", ["--model_name_or_path", "openai/clip-vit-base-patch16", "--data_dir", "/"])
    assert capsys.readouterr().out == ""


def test_help_is_a_short_page_printed_at_once():
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), "--help"], capture_output=True, text=True, cwd="/"
    )
    elapsed = time.perf_counter() - start
    assert completed.returncode == 0 and completed.stdout == (REPO / "examples/help/train.txt").read_text()
    assert elapsed < 2.0 and len(completed.stdout.splitlines()) < 120
    assert "--help <method>" in completed.stdout and "--help all" in completed.stdout


@pytest.mark.parametrize(("argv", "status", "start"), [
    (["--help", "tip-adapter-f"], 0, "--method tip-adapter-f: Tip-Adapter-F (Zhang et al."),
    (["-h", "linear-probe"], 0, "--method linear-probe has no settings of its own"),
    (["--help", "bogus"], 2, "error: --help 'bogus': not a prompt method; use one of coop, cocoop"),
])  # fmt: skip
def test_each_methods_settings_at_once(argv, status, start):
    begin = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "sweep.py"), *argv], capture_output=True, text=True, cwd="/"
    )
    assert time.perf_counter() - begin < 2.0 and completed.returncode == status
    assert (completed.stdout + completed.stderr).startswith(start)


def test_method_settings_and_every_flag_on_request(capsys):
    train = load_example("train")
    with pytest.raises(SystemExit) as done:
        train.main(["--help", "promptsrc"])
    assert done.value.code == 0
    page = capsys.readouterr().out
    assert page.startswith("--method promptsrc: PromptSRC") and "--gpa_mean" in page and "(default: 15.0)" in page
    assert "Recipe per protocol" in page and "--num_train_epochs 50" in page and "--gpa_mean 30.0" in page
    assert "vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml" in page  # the official file each row comes from
    with pytest.raises(SystemExit):
        train.main(["--help", "all"])
    assert "--lr_scheduler_kwargs" in capsys.readouterr().out  # TrainingArguments' every flag
    with pytest.raises(ValueError, match="--help 'nope': not a prompt method"):
        train.main(["--help", "nope"])

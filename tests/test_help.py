"""The scripts' help: a short page at once (before torch loads), each method's settings and every flag on
request; the short pages are generated from the flags' definitions and must match them."""

import shutil
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


def run_script(script: str, *argv: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / f"{script}.py"), *argv], capture_output=True, text=True, cwd="/"
    )
    return completed, time.perf_counter() - start


EXAMPLE_SCRIPTS = sorted(path.stem for path in (REPO / "examples").glob("*.py") if path.stem != "quick_help")


def test_every_example_script_has_generated_pages():
    assert sorted(QUICK_HELP.SCRIPTS) == EXAMPLE_SCRIPTS


@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS)
def test_every_script_prints_its_page_at_once(script):
    completed, elapsed = run_script(script, "--help")
    assert completed.returncode == 0 and elapsed < 2.0
    assert completed.stdout == (REPO / "examples" / "help" / f"{script}.txt").read_text()


BLOCKED = str(REPO / "README.md" / "out")  # a folder under a file: no process can write it


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("app", ["--prompts", "runs/cop/seed1"], "--prompts 'runs/cop/seed1' is neither a folder nor a Hub id"),
        ("app", ["--prompts", "/no/prompt"], "--prompts '/no/prompt' is neither a folder nor a Hub id (owner/name)"),
        ("app", ["--top_k", "0"], "--top_k must be at least 1; got 0."),
        ("app", ["--port", "http"], "argument --port: invalid int value: 'http'"),
        ("app", ["--examples", "/no/images"], "--examples '/no/images' is neither an image nor a folder."),
        ("app", ["--help", "coop"], "app.py takes no --method: --help coop has no page (see app.py --help)"),
        ("app", ["--shared"], "unrecognized flag --shared (see app.py --help)"),
        ("interpret_prompt", ["runs/cop/seed1"], "--prompt 'runs/cop/seed1' is neither a folder nor a Hub id"),
        ("interpret_prompt", ["./seed1", "--top_k", "2"], "--prompt './seed1' is neither a folder nor a Hub id"),
        ("interpret_prompt", ["--prompt", "org/coop", "--top_k", "-1"], "--top_k must be at least 1; got -1."),
        ("evaluate_prompt", ["--prompt", "~/seed1"], "--prompt '~/seed1' is neither a folder nor a Hub id"),
        ("evaluate_prompt", ["--batch_size", "0"], "--batch_size takes a number of images, at least 1; got 0."),
        ("evaluate_prompt", ["--output_dir", BLOCKED], f"--output_dir '{BLOCKED}' cannot be written (Not a direc"),
        ("make_tiny_clip", ["--tokenizer_from", "./no-clip"], "--tokenizer_from './no-clip' is neither a folder"),
        ("train", ["--output_dir", BLOCKED], f"--output_dir '{BLOCKED}' cannot be written (Not a directory: "),
        ("sweep", ["--feature_cache_dir", BLOCKED], f"--feature_cache_dir '{BLOCKED}' cannot be written"),
        ("train", ["--noise_rate", "0.5"], "--noise_rate 0.5 without --noise_type adds no noise: pass --noise_type"),
        ("sweep", ["--noise_type", "none", "--noise_rate=0.25"], "--noise_rate 0.25 without --noise_type adds no"),
    ],
)
def test_every_script_refuses_a_bad_flag_at_once_in_one_line(script, argv, message):
    completed, elapsed = run_script(script, *argv)
    assert elapsed < 2.0 and completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith(f"error: {message}") and len(completed.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("script", "argv", "suggestion"),
    [
        ("train", ["--method", "copo"], "coop"),
        ("sweep", ["--method", "zeroshot", "linear-probes"], "linear-probe"),
        ("train", ["--help", "cocop"], "cocoop"),
    ],
)
def test_a_misspelt_method_is_answered_with_the_closest_name(script, argv, suggestion):
    completed, _ = run_script(script, *argv)
    assert completed.returncode == 2 and completed.stderr.endswith(f". Did you mean {suggestion!r}?\n")


@pytest.mark.parametrize("script", ["train", "sweep", "base_to_new", "transfer", "train_noisy", "train_upl",
                                    "evaluate_prompt", "make_tiny_clip"])  # fmt: skip
def test_a_read_only_output_dir_is_refused_at_once(script, tmp_path):
    """A read-only file system (a tmpfs mounted read-only in a user namespace) ended in a 29-37-line traceback."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no user namespace to mount a read-only file system in")
    mount = tmp_path / "read-only"
    mount.mkdir()
    command = f"mount -t tmpfs -o ro tmpfs {mount} && exec {sys.executable} {REPO}/examples/{script}.py --output_dir "
    completed = subprocess.run(["unshare", "-rm", "sh", "-c", f"{command}{mount}/run"], capture_output=True, text=True)
    assert completed.returncode == 2 and completed.stderr == (
        f"error: --output_dir '{mount}/run' cannot be written (Read-only file system: {mount}): pass a folder you can "
        "write to.\n"
    )


def test_every_flag_page_shows_a_default_only_where_there_is_one(capsys):
    with pytest.raises(SystemExit):
        load_example("evaluate_prompt").main(["--help", "all"])
    page = capsys.readouterr().out
    assert "(default: the one the prompt names)" in " ".join(page.split())
    assert "(default: None)" not in page and "names). (default" not in " ".join(page.split())
    assert "(default: 100)" in page  # --batch_size


def test_what_the_quick_check_lets_through_is_left_to_the_parser(capsys):
    QUICK_HELP.answer_at_once("train.py", ["--num_train", "2", "--method", "coop", "--seeds", "1", "2"])  # a prefix
    QUICK_HELP.answer_at_once("sweep.py", ["--method", "zeroshot", "coop", "--shots", "1"])
    QUICK_HELP.answer_at_once("train.py", ["--help", "all"])
    noisy = ["--noise_rate", "0.5", "--noise_type", "replace"]
    QUICK_HELP.answer_at_once("train.py", ["--shots", "1", *noisy, "--gce_q", "1", "--loss", "gce"])
    QUICK_HELP.answer_at_once("train.py", ["--noise_rate", "0", "--noise_val", "true"])
    QUICK_HELP.answer_at_once("train.py", ["--model_name_or_path", "openai/clip-vit-base-patch16", "--data_dir", "/"])
    QUICK_HELP.answer_at_once("app.py", ["--prompts", "org/coop", "runs/seed1", str(REPO), "--examples", str(REPO)])
    QUICK_HELP.answer_at_once("train.py", ["--output_dir", str(REPO / "no" / "such" / "folder")])  # to be made
    QUICK_HELP.answer_at_once("train.py", ["--model_name_or_path", "local-dir:/models/clip/b32"])  # open_clip names
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

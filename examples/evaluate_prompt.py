"""Evaluate a saved prompt on a dataset's test split, over that dataset's own class names.

    python examples/evaluate_prompt.py --prompt outputs/seed1 --dataset caltech101 --data_dir /data --output_dir ev
    python examples/evaluate_prompt.py --prompt org/coop-imagenet --dataset imagenet_a --data_dir /data --output_dir ev

Any prompt model of coop_hf works (CoOp, CoCoOp, ensembles, ...), from a local folder or the Hub; its base CLIP is
the one its config names unless --model_name_or_path is given. A unified context moves to the dataset's class
names (only the class-name tokens change, as in the reference); a class-specific context is refused on another
class list. Writes output_dir/results.json: accuracy and macro accuracy (%), zero-shot CLIP's accuracy on the same
split, and the identity of the prompt and of the dataset (test images, split fingerprint).
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

from coop_hf.cli import run_command
from coop_hf.runners.evaluation import EvaluationArguments, run_evaluation
from coop_hf.runners.help import parse_flags

ARGUMENTS = (EvaluationArguments,)


def main(argv: list[str] | None = None) -> dict:
    (arguments,) = parse_flags(ARGUMENTS, argv)
    results = run_evaluation(arguments)
    moved = " (moved to its classes)" if results["classnames_moved"] else ""
    print(
        f"[coop-hf] {results['prompt']['method']} prompt {arguments.prompt} on {arguments.dataset}{moved}: test "
        f"accuracy {results['accuracy']:.2f} % (zero-shot {results['zeroshot_accuracy']:.2f} %) -> "
        f"{arguments.output_dir}/results.json"
    )
    return results


if __name__ == "__main__":
    run_command(main, resumable=False)

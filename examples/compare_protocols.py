"""The methods you name under the papers' evaluation protocol and the realistic one, side by side, in one command.

    python examples/compare_protocols.py --dataset caltech101 oxford_pets --data_dir /data \\
        --method linear-probe coop tip-adapter --shots 4 16 --seeds 1 2 3 --output_dir compare
    python examples/compare_protocols.py ... --imbalance_ratio 20 --mean_shots 8   # another long-tailed profile

Takes every flag of examples/sweep.py and runs its sweep twice, with --protocol papers (output_dir/papers) and
--protocol realistic (output_dir/realistic: long-tailed shots, no validation image, one recipe for every dataset;
docs/studies/realistic.md); zero-shot CLIP is always added as the floor. A rerun skips every finished cell, as the
sweep does; --shard I/N runs the I-th part of both grids, and the same command without --shard then compares.
Writes output_dir/comparison.md (per dataset, their average, method and shot count: papers' | realistic |
difference, † below zero-shot CLIP), comparison.json and comparison.png.
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

import json
import sys
from pathlib import Path
from typing import Any

import sweep

from coop_hf.atomic import atomic_write_text
from coop_hf.cli import run_command
from coop_hf.runners.help import parse_flags
from coop_hf.runners.realistic import ZEROSHOT, compare_protocols, comparison_markdown, plot_comparison

ARGUMENTS = sweep.ARGUMENTS


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the sweep under both protocols; returns the comparison's entries."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments, _, training_args = parse_flags(ARGUMENTS, argv)  # checks every flag before anything runs
    methods = list(dict.fromkeys([ZEROSHOT, *arguments.method]))
    output_dir = Path(training_args.output_dir)
    rows = {}
    for protocol in ("papers", "realistic"):
        # the last occurrence of a flag wins: the protocol, its folder and the methods with zero-shot CLIP
        overrides = ["--protocol", protocol, "--output_dir", str(output_dir / protocol), "--method", *methods]
        rows[protocol] = sweep.main([*argv, *overrides])
    if arguments.shard is not None:  # a part of both grids: the same command without --shard compares them
        return []
    entries = compare_protocols(rows["papers"], rows["realistic"])
    if training_args.should_save:
        mean = "--shots" if arguments.mean_shots is None else f"{arguments.mean_shots:g}"
        intro = (
            f"# Papers' and realistic protocols: {arguments.model_name_or_path}\n\n"
            f"Test accuracy (%), mean over seeds {', '.join(map(str, arguments.seeds))}. Papers': K shots per class, "
            "the validation split for the methods that search on it, per-dataset recipes. Realistic: long-tailed "
            f"shots (imbalance ratio {arguments.imbalance_ratio:g}, mean {mean} per class), no validation image, one "
            "recipe for every dataset (docs/studies/realistic.md). Runs: papers/ and realistic/."
        )
        atomic_write_text(output_dir / "comparison.md", comparison_markdown(entries, intro=intro))
        atomic_write_text(output_dir / "comparison.json", json.dumps(entries, indent=2) + "\n")
        if entries:
            plot_comparison(entries, output_dir / "comparison.png")
        if training_args.should_log:
            print(f"[coop-hf] comparison: {output_dir / 'comparison.md'}, comparison.png")
    return entries


if __name__ == "__main__":
    run_command(main)

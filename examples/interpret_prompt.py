"""What did the prompt learn? The vocabulary tokens nearest to each learned context vector (Euclidean distance in
CLIP's token-embedding space, as the reference's interpret_prompt.py).

    python examples/interpret_prompt.py org/coop-flowers102 --top_k 5
    python examples/interpret_prompt.py outputs/seed1 --model_name_or_path /models/clip-vit-base-patch32

The prompt comes first (or as --prompt). Prints one line per context vector (per class with class-specific
context): its position and the nearest tokens with their distances.
"""

from __future__ import annotations

import sys

from quick_help import answer_at_once


def with_prompt_flag(argv: list[str]) -> list[str]:
    """`PROMPT ...` read as `--prompt PROMPT ...`: the prompt may come first, without its flag."""
    return ["--prompt", *argv] if argv and not argv[0].startswith("-") else argv


if __name__ == "__main__":
    answer_at_once(__file__, with_prompt_flag(sys.argv[1:]))  # --help, misspelt flags, bad values: before torch loads

from dataclasses import dataclass, field

from coop_hf import PROMPT_MODELS, CoOpModel
from coop_hf.cli import run_command
from coop_hf.hub_access import model_load_kwargs
from coop_hf.runners.evaluation import load_prompt_config
from coop_hf.runners.help import parse_flags


@dataclass
class InterpretArguments:
    prompt: str = field(metadata={"help": "A saved prompt: local folder or Hub id (also the first word, flagless)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base CLIP: Hub id or local path (default: the one the prompt names)."}
    )
    top_k: int = field(default=5, metadata={"help": "Nearest tokens per context vector."})


ARGUMENTS = (InterpretArguments,)


def format_nearest(nearest: list[list[tuple[str, float]]]) -> list[str]:
    """One line per context vector: "  3: photo (0.0123), image (0.4567), ..."."""
    return [
        f"{position:3d}: " + ", ".join(f"{word} ({distance:.4f})" for word, distance in tokens)
        for position, tokens in enumerate(nearest, start=1)
    ]


def main(argv: list[str] | None = None) -> list[str]:
    (args,) = parse_flags(ARGUMENTS, with_prompt_flag(sys.argv[1:] if argv is None else argv))
    config, load_kwargs = load_prompt_config(args.prompt)
    model_class = PROMPT_MODELS[config.model_type]
    if not issubclass(model_class, CoOpModel):  # a learned context in CoOp's token-embedding space
        raise ValueError(
            f"--prompt {args.prompt!r} is a {model_class.__name__}, which holds no single learned context to "
            "interpret: give a prompt of CoOp's family (coop, cocoop, kgcoop, prograd, maple, ...)."
        )
    base = {}
    if args.model_name_or_path:
        model_load_kwargs(args.model_name_or_path)  # one that cannot load fails at once, naming the flag
        base = {"clip_model": args.model_name_or_path}
    model = model_class.from_pretrained(args.prompt, config=config, **base, **load_kwargs)
    nearest = model.nearest_tokens(top_k=args.top_k)
    if model.config.class_specific_context:
        lines = []
        for classname, per_class in zip(model.classnames, nearest, strict=True):
            lines += [f"{classname}:", *(f"  {line}" for line in format_nearest(per_class))]
    else:
        lines = format_nearest(nearest)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    run_command(main, resumable=False)

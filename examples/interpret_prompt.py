"""What did the prompt learn? The vocabulary tokens nearest to each learned context vector (Euclidean distance in
CLIP's token-embedding space, as the reference's interpret_prompt.py).

    python examples/interpret_prompt.py org/coop-flowers102 --top_k 5
    python examples/interpret_prompt.py outputs/seed1 --model_name_or_path /models/clip-vit-base-patch32

Prints one line per context vector (per class with class-specific context): its position and the nearest tokens
with their distances.
"""

from __future__ import annotations

import argparse

from transformers import AutoModel

from coop_hf import CoOpModel  # importing coop_hf registers the prompt models with AutoModel
from coop_hf.cli import run_command


def format_nearest(nearest: list[list[tuple[str, float]]]) -> list[str]:
    """One line per context vector: "  3: photo (0.0123), image (0.4567), ..."."""
    return [
        f"{position:3d}: " + ", ".join(f"{word} ({distance:.4f})" for word, distance in tokens)
        for position, tokens in enumerate(nearest, start=1)
    ]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", help="A saved prompt: local folder or Hub id.")
    parser.add_argument("--model_name_or_path", help="Base CLIP (default: the one the prompt names).")
    parser.add_argument("--top_k", type=int, default=5, help="Nearest tokens per context vector.")
    args = parser.parse_args(argv)
    kwargs = {"clip_model": args.model_name_or_path} if args.model_name_or_path else {}
    model = AutoModel.from_pretrained(args.prompt, **kwargs)
    if not isinstance(model, CoOpModel):  # a learned context in CoOp's token-embedding space
        parser.error(f"{args.prompt} is a {type(model).__name__}, which holds no single learned context to interpret.")
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

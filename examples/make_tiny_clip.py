"""Make a small CLIP with random weights, to try every command without downloading a checkpoint.

    python examples/make_tiny_clip.py --tokenizer_from ../shared/clip-configs/clip-vit-base-patch32 \\
        --output_dir tiny-random-clip
    python examples/train.py --model_name_or_path tiny-random-clip --dataset caltech101 --data_dir ../shared/data \\
        --shots 2 --num_train_epochs 5 --output_dir runs/try

The tokenizer and image processor are copied from --tokenizer_from (a local CLIP folder or a Hub id: the real BPE
vocabulary, so prompts tokenize as with a real CLIP); the towers are small and randomly initialised from --seed.
Accuracies of such a model are chance-level: it shows the layout of results, tables and plots, not their values.
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel, set_seed

from coop_hf.cli import run_command
from coop_hf.hub_access import model_load_kwargs
from coop_hf.runners.help import parse_flags


@dataclass
class TinyClipArguments:
    tokenizer_from: str = field(
        metadata={"help": "CLIP folder or Hub id whose tokenizer and image processor the tiny model takes."}
    )
    output_dir: str = field(default="tiny-random-clip", metadata={"help": "Folder to write the model to."})
    width: int = field(default=64, metadata={"help": "Hidden size of both towers."})
    layers: int = field(default=2, metadata={"help": "Transformer layers of each tower (deep prompts need depth)."})
    projection_dim: int = field(default=32, metadata={"help": "Size of the joint image-text features."})
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})


ARGUMENTS = (TinyClipArguments,)


def tiny_clip_config(args: TinyClipArguments, vocab_size: int) -> CLIPConfig:
    """A ViT-B/32-shaped CLIP (224-pixel images in 32-pixel patches, 77 text positions) with small towers."""
    tower = dict(
        hidden_size=args.width,
        intermediate_size=4 * args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=max(args.width // 16, 1),
    )
    return CLIPConfig(
        text_config=dict(tower, vocab_size=vocab_size, max_position_embeddings=77, eos_token_id=2),
        vision_config=dict(tower, image_size=224, patch_size=32),
        projection_dim=args.projection_dim,
    )


def main(argv: list[str] | None = None) -> Path:
    (args,) = parse_flags(ARGUMENTS, argv)
    load_kwargs = model_load_kwargs(args.tokenizer_from, flag="--tokenizer_from")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_from, **load_kwargs)
    image_processor = AutoImageProcessor.from_pretrained(args.tokenizer_from, **load_kwargs)
    set_seed(args.seed)
    model = CLIPModel(tiny_clip_config(args, len(tokenizer))).eval()
    output = Path(args.output_dir)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    image_processor.save_pretrained(output)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"A random CLIP of {parameters / 1e6:.1f} M parameters ({args.layers} layers, width {args.width}): {output}")
    return output


if __name__ == "__main__":
    run_command(main, resumable=False)

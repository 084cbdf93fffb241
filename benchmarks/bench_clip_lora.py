"""Time one CLIP-LoRA training step: the straightforward computation against coop_hf's, on the ViT-B/32
architecture with random weights (LoRA r 2 on q, k, v of every layer of both towers, dropout off so that the two
steps can be compared).

Modes, each a full step (forward, backward, AdamW over every LoRA matrix) on a batch:
  straightforward  the official computation: every class prompt at CLIP's full 77 tokens through the updated text
                   tower; the updated image tower
  ours             coop_hf's model: prompts cut after the longest end-of-text token, the template's [SOS] + "a photo
                   of a" encoded once for all classes; the same image tower
Before timing, the two first steps (same tensors, same inputs) are compared: loss and every gradient.

Example: python benchmarks/bench_clip_lora.py --classes 102 --batch_size 32 --repeats 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_step import (  # noqa: E402
    CLIP_CONFIGS,
    build_clip,
    classnames,
    straightforward_against_ours,
)
from transformers import AutoTokenizer  # noqa: E402

from coop_hf import CLIPLoRAModel  # noqa: E402

MODES = ("straightforward", "ours")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=102)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    config_dir = CLIP_CONFIGS[0]
    clip = build_clip(config_dir, device)
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    torch.manual_seed(0)
    model = CLIPLoRAModel.from_clip(clip, classnames(args.classes), tokenizer=tokenizer, lora_dropout=0.0)
    model.to(device).train()
    with torch.no_grad():  # B starts at zero; random B makes every gradient non-trivial
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    generator = torch.Generator().manual_seed(0)
    size = clip.config.vision_config.image_size
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    texts = [model.config.template.format(name) for name in model.classnames]
    full = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")["input_ids"].to(device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    def straightforward_loss() -> torch.Tensor:
        image = F.normalize(model.image_features(pixel_values, None), dim=-1)
        text = F.normalize(model.clip.get_text_features(input_ids=full).pooler_output, dim=-1)
        return F.cross_entropy(model.backbone.logits(image, text), labels)

    losses = {
        "straightforward": straightforward_loss,
        "ours": lambda: model(pixel_values=pixel_values, labels=labels).loss,
    }
    optimizers = {mode: torch.optim.AdamW(parameters, lr=2e-4, weight_decay=1e-2) for mode in MODES}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ViT-B/32 architecture, CLIP-LoRA r 2 on "
          f"q/k/v of both towers ({sum(p.numel() for p in parameters):,} parameters), {args.classes} classes, batch "
          f"{args.batch_size}, fp32 {device}; prompts {model.input_ids.shape[1]} tokens, {model.prefix_length} "
          "shared (straightforward: 77)")  # fmt: skip
    straightforward_against_ours(losses, optimizers, parameters, device, args.repeats)


if __name__ == "__main__":
    main()

"""Time one CoOp training step on every backbone family at ViT-B size (random weights), with the shared-prefix fast
path and without it.

Families: CLIP ViT-B/32 (../shared/clip-configs), MetaCLIP 2 with CLIP ViT-B/32's towers, SigLIP base patch16-224
and SigLIP 2 NaFlex base patch16 (256 patches) with their published widths; the text towers of MetaCLIP 2 and the
SigLIPs use `coop_hf.testing.tiny_tokenizer` trained on the class names (each family's real tokenizer class, a
small vocabulary), CLIP its real BPE tokenizer. Each step is forward, backward and SGD (momentum 0.9, weight decay
5e-4) over the context, 16 context vectors, Flowers102's class names. Modes:
  fast    `CoOpModel` on cached image features: the shared [SOS] + context prefix encoded once where the text tower
          is causal (CLIP, MetaCLIP 2); SigLIP's bidirectional tower always takes the plain path
  plain   the same prompts through every layer in full (`coop_hf.text_encoding.encode_plain`)
  pixels  fast, with the image tower run on the batch
Before timing, fast and plain are compared (loss and context gradient).

Example: python benchmarks/bench_backbones.py --families clip siglip --classes 102 --repeats 5
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_step import (  # noqa: E402
    CLIP_CONFIGS,
    build_clip,
    classnames,
    compare,
    current_memory,
    peak_memory,
    reset_peak_memory,
    sgd,
    synchronize,
    training_step,
)
from transformers import AutoTokenizer  # noqa: E402

from coop_hf import CoOpModel  # noqa: E402
from coop_hf.testing import random_backbone, tiny_tokenizer  # noqa: E402
from coop_hf.text_encoding import encode_plain  # noqa: E402

FAMILIES = ("clip", "metaclip_2", "siglip", "siglip2")
MODES = ("fast", "plain", "pixels")
VIT_B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
VIT_B_TOWER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
SHAPES = {  # family: (text config, vision config, projection dim)
    "metaclip_2": (
        dict(VIT_B32_TEXT, max_position_embeddings=77),
        dict(VIT_B_TOWER, image_size=224, patch_size=32),
        512,
    ),
    "siglip": (dict(VIT_B_TOWER, max_position_embeddings=64), dict(VIT_B_TOWER, image_size=224, patch_size=16), None),
    "siglip2": (
        dict(VIT_B_TOWER, max_position_embeddings=64),
        dict(VIT_B_TOWER, num_patches=256, patch_size=16),
        None,
    ),
}
IMAGE_SIZE = {"clip": 224, "metaclip_2": 224, "siglip": 224, "siglip2": 256}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--classes", type=int, default=102)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_ctx", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def build(family: str, names: list[str], device: torch.device):
    if family == "clip":
        return build_clip(CLIP_CONFIGS[0], device), AutoTokenizer.from_pretrained(CLIP_CONFIGS[0])
    sentences = [f"a photo of a {name}." for name in names]
    tokenizer = tiny_tokenizer(family, sentences, max_length=SHAPES[family][0]["max_position_embeddings"])
    text, vision, projection_dim = SHAPES[family]
    model = random_backbone(family, tokenizer, text=text, vision=vision, projection_dim=projection_dim)
    return model.to(device), tokenizer


def bench_family(family: str, args: argparse.Namespace, device: torch.device) -> None:
    names = classnames(args.classes)
    clip, tokenizer = build(family, names, device)
    model = CoOpModel.from_clip(clip, names, tokenizer=tokenizer, n_ctx=args.n_ctx).to(device)
    model.train()
    backbone, learner = model.backbone, model.prompt_learner
    generator = torch.Generator().manual_seed(0)
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    with torch.no_grad():
        image_embeds = backbone.image_features(pixel_values)

    def plain_loss() -> torch.Tensor:
        text = encode_plain(backbone, learner(backbone.token_embedding), learner.eot_positions)
        logits = backbone.logits(F.normalize(image_embeds, dim=-1), F.normalize(text, dim=-1))
        return F.cross_entropy(logits, labels)

    losses = {
        "fast": lambda: model(image_embeds=image_embeds, labels=labels).loss,
        "plain": plain_loss,
        "pixels": lambda: model(pixel_values=pixel_values, labels=labels).loss,
    }
    initial = learner.ctx.detach().clone()
    modes = [mode for mode in MODES if mode in args.modes]
    optimizers = {mode: sgd([learner.ctx]) for mode in modes}
    peaks, before, first, times = {}, {}, {}, {mode: [] for mode in modes}
    for mode in modes:  # warm-up steps, each from the same context, in its own peak-memory window
        with torch.no_grad():
            learner.ctx.copy_(initial)
        reset_peak_memory(device)
        before[mode] = current_memory(device)
        first[mode] = training_step(losses[mode], optimizers[mode])
        synchronize(device)
        peaks[mode] = peak_memory(device)
    path = "shared prefix" if backbone.causal_text else "plain (bidirectional text tower)"
    print(f"\n== {backbone.display_name}: {args.classes} classes, prompts {learner.input_ids.shape[1]} tokens, "
          f"fast path: {path} ==")  # fmt: skip
    if "fast" in first and "plain" in first:
        print("  check: " + compare(first["plain"], first["fast"]).replace("ours vs reference", "fast vs plain"))
    for _ in range(args.repeats):  # interleaved, so that drifting machine speed affects every mode alike
        for mode in modes:
            start = time.perf_counter()
            training_step(losses[mode], optimizers[mode])
            synchronize(device)
            times[mode].append(time.perf_counter() - start)
    for mode in modes:
        median = statistics.median(times[mode])
        speedup = ""
        if mode == "fast" and "plain" in times:  # the same computation on the same inputs, without the fast path
            speedup = f", {statistics.median(times['plain']) / median:.2f}x plain's speed"
        print(
            f"  {mode:>6}: median {median:7.3f} s (min {min(times[mode]):.3f}, max {max(times[mode]):.3f}), "
            f"peak {peaks[mode]:.2f} GiB (+{peaks[mode] - before[mode]:.2f}){speedup}"
        )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"n_ctx {args.n_ctx}, {args.repeats} timed steps per mode (median), fp32 {device}")  # fmt: skip
    for family in args.families:
        bench_family(family, args, device)


if __name__ == "__main__":
    main()

"""Time one CoOp training step on an open_clip model (the setting of CoOp's paper: CLIP ResNet-50), random weights:
the straightforward computation against coop_hf's, with the image tower in the step and from cached features.

Modes, each a full step (forward, backward, SGD with momentum and weight decay over the context) on a batch:
  straightforward         every class prompt at CLIP's full 77 tokens through open_clip's text transformer (the
                          computation of the CoOp reference code's TextEncoder); open_clip's `encode_image` on the
                          batch
  ours                    coop_hf's CoOpModel: prompts cut after the longest end-of-text token, the shared [SOS] +
                          context prefix encoded once; the same image tower (weights), a
                          frozen ResNet fed channels-last and rewritten for inference (BatchNorms folded into the
                          convolutions, residual sums in place, only the pooled token attended)
  straightforward_cached  straightforward, from precomputed image features
  ours_cached             ours, from precomputed image features (coop_hf.feature_cache)
Before timing, each pair's first steps (same context, same inputs) are compared: loss and context gradient.
Needs open_clip (pip install -e ".[open-clip]").

Example: python benchmarks/bench_open_clip.py --model RN50 --classes 102 --batch_size 32 --repeats 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_step import classnames, sgd, straightforward_against_ours, synchronize  # noqa: E402

from coop_hf import CoOpModel  # noqa: E402
from coop_hf.backbones.openclip import OpenCLIPModel, open_clip_tokenizer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="RN50", help="an open_clip architecture (built without weights)")
    parser.add_argument("--classes", type=int, default=102)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_ctx", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def time_frozen_tower(reference, clip: OpenCLIPModel, pixel_values: torch.Tensor, device, repeats: int) -> None:
    """The frozen image tower alone on the batch, without gradients: open_clip's `encode_image` against coop_hf's
    (a ResNet fed channels-last, rewritten for inference), interleaved, after a warm-up call of each."""
    towers = {"open_clip": reference.encode_image, "coop_hf": clip.get_image_features}
    times = {name: [] for name in towers}
    with torch.no_grad():
        expected, ours = (tower(pixel_values) for tower in towers.values())
        for _ in range(repeats):
            for name, tower in towers.items():
                synchronize(device)
                start = time.perf_counter()
                tower(pixel_values)
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    error = ((ours - expected).abs().max() / expected.abs().max()).item()
    print(f"\n== the frozen image tower alone ==\nopen_clip {medians['open_clip']:.3f} s, coop_hf "
          f"{medians['coop_hf']:.3f} s ({medians['open_clip'] / medians['coop_hf']:.2f}x), features within "
          f"{error:.1e} (relative)")  # fmt: skip


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    reference = open_clip.create_model(args.model, pretrained=None).eval()
    clip = OpenCLIPModel.from_open_clip_model(reference, open_clip.get_model_config(args.model)).to(device)
    clip.requires_grad_(False)  # frozen, as every run freezes it
    names = classnames(args.classes)
    model = CoOpModel.from_clip(clip, names, tokenizer=open_clip_tokenizer(clip), n_ctx=args.n_ctx).to(device)
    model.train()
    backbone, learner = model.backbone, model.prompt_learner
    generator = torch.Generator().manual_seed(0)
    size = reference.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    with torch.no_grad():
        image_embeds = backbone.image_features(pixel_values)
    # The reference's prompts: every class at the full 77 tokens, the context written over the placeholders.
    full = torch.nn.functional.pad(
        learner.input_ids, (0, 77 - learner.input_ids.shape[1]), value=model.tokenizer.pad_token_id
    )
    text = reference.transformer if hasattr(reference, "transformer") else reference.text.transformer

    def straightforward_text() -> torch.Tensor:
        embeds = reference.token_embedding(full)
        rows = torch.arange(len(full), device=device).unsqueeze(1)
        embeds = embeds.index_put((rows, learner.context_positions), learner.ctx.expand(len(full), -1, -1))
        hidden = text(embeds + reference.positional_embedding, attn_mask=reference.attn_mask)
        pooled = reference.ln_final(hidden)[torch.arange(len(full)), learner.eot_positions]
        return pooled @ reference.text_projection

    def straightforward(image: torch.Tensor | None) -> torch.Tensor:
        image = reference.encode_image(pixel_values) if image is None else image  # open_clip's own layout
        logits = backbone.logits(F.normalize(image, dim=-1), F.normalize(straightforward_text(), dim=-1))
        return F.cross_entropy(logits, labels)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; open_clip {args.model} (random weights), "
          f"CoOp with {args.n_ctx} context vectors, {args.classes} classes, batch {args.batch_size}, fp32 {device}; "
          f"prompts {learner.input_ids.shape[1]} tokens (straightforward: 77)")  # fmt: skip
    time_frozen_tower(reference, clip, pixel_values, device, args.repeats)
    for what, image in (("with the image tower in the step", None), ("from cached image features", image_embeds)):
        print(f"\n== {what} ==")
        losses = {
            "straightforward": lambda image=image: straightforward(image),
            "ours": (lambda: model(pixel_values=pixel_values, labels=labels).loss)
            if image is None
            else (lambda: model(image_embeds=image_embeds, labels=labels).loss),
        }
        optimizers = {mode: sgd([learner.ctx]) for mode in losses}
        straightforward_against_ours(losses, optimizers, [learner.ctx], device, args.repeats)


if __name__ == "__main__":
    main()

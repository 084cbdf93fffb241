"""Time a CoOp training step: the reference computation against coop_hf's, on random-weight CLIP architectures.

Modes, each a full step (forward, backward, SGD with momentum and weight decay) on a batch of images:
  reference  every class prompt at CLIP's full 77 tokens through the text encoder; the image encoder on the batch
             (the computation of the CoOp reference code, through transformers' CLIP modules)
  ours       coop_hf.CoOpModel: prompts cut after the longest end-of-text token, the shared [SOS] + context prefix
             encoded once; the image encoder on the batch
  cached     as ours, from precomputed image features (coop_hf.feature_cache)
  cached_checkpoint
             as cached, with per-layer activation checkpointing of the text encoder (less memory); not by default
Before timing, the reference's and ours' loss and context gradient are compared on the same inputs.
With --epoch, also one training epoch of 16-shot Flowers102 (1632 real images) with and without the feature cache.

Example: python benchmarks/bench_step.py --classes 10 102 --epoch
"""

from __future__ import annotations

import os

# On small VMs OpenMP's default spin-waiting can cost milliseconds per parallel op when the vCPUs are contended;
# passive waiting avoids that. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.checkpoint  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel  # noqa: E402
from transformers.masking_utils import create_causal_mask  # noqa: E402

from coop_hf import CoOpModel, PromptLearner  # noqa: E402
from coop_hf.data import CoOpTransform, load_benchmark, sample_few_shot, with_coop_transform  # noqa: E402
from coop_hf.feature_cache import encode_images  # noqa: E402
from coop_hf.prompts import PromptTokens  # noqa: E402
from coop_hf.text_encoding import shared_prefix_length  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP_CONFIGS = [
    SHARED / "clip-configs" / "clip-vit-base-patch32",
    SHARED / "clip-configs" / "tinyclip-vit-8m-16-text-3m",
]
MODIFIERS = ["wild", "giant", "dwarf", "alpine", "common", "spotted", "golden", "mountain", "marsh", "desert"]
MODES = ("reference", "ours", "cached", "cached_checkpoint")
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip_config", nargs="+", type=Path, default=CLIP_CONFIGS, help="CLIP config folders")
    parser.add_argument("--classes", nargs="*", type=int, default=[10, 102, 1000], help="class counts (none: skip)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_ctx", type=int, default=16)
    parser.add_argument("--position", choices=["end", "middle", "front"], default="end")
    parser.add_argument(
        "--reference_checkpoint_min_classes",
        type=int,
        default=1000,
        help="from this many classes on, the reference recomputes activations per layer in backward "
        "(torch.utils.checkpoint): its 77-token activations of 1000 ViT-B/32 prompts (about 33 GiB) exceed 24 GiB",
    )
    parser.add_argument(
        "--no_warmup", action="store_true", help="count the first step as a timed one (for very slow settings)"
    )
    parser.add_argument("--epoch", action="store_true", help="also time an epoch of 16-shot Flowers102")
    parser.add_argument("--data_dir", type=Path, default=SHARED / "data", help="folder holding oxford_flowers/")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers for the epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="TinyCLIP only, 10 and 102 classes, no epoch")
    args = parser.parse_args()
    if args.quick:
        args.clip_config, args.classes, args.epoch = [CLIP_CONFIGS[1]], [10, 102], False
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# -- memory ------------------------------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window: CUDA's allocator peak, or the process's resident-set high-water mark."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the window starts from live memory
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass  # no reset: getrusage's lifetime peak is reported instead


def peak_memory(device: torch.device) -> float:
    """GiB: CUDA max_memory_allocated, else VmHWM (peak RSS since the last reset) or ru_maxrss."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def current_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / GIB
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


# -- the computations ----------------------------------------------------------------------------------------------


def classnames(count: int) -> list[str]:
    """Real Flowers102 names; past 102, "<modifier> <flower>" names of ImageNet-like length (2-8 BPE tokens)."""
    flowers = list(json.loads((SHARED / "data" / "oxford_flowers" / "cat_to_name.json").read_text()).values())
    if count <= len(flowers):
        return flowers[:count]
    names = [f"{MODIFIERS[index // len(flowers)]} {flowers[index % len(flowers)]}" for index in range(count)]
    if len(names) > len(MODIFIERS) * len(flowers):
        raise ValueError(f"At most {len(MODIFIERS) * len(flowers)} synthetic class names.")
    return names


def reference_learner(model: CoOpModel) -> PromptLearner:
    """The model's prompts padded to CLIP's full context length (77), with a copy of its context."""
    learner = model.prompt_learner
    full_length = model.clip.config.text_config.max_position_embeddings
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    input_ids = F.pad(learner.input_ids, (0, full_length - learner.input_ids.shape[1]), value=pad_id)
    tokens = PromptTokens(input_ids, learner.context_positions, learner.eot_positions, learner.text_start)
    return PromptLearner(learner.ctx.detach().clone(), tokens)


def reference_loss(
    clip: CLIPModel, learner: PromptLearner, pixel_values: torch.Tensor, labels: torch.Tensor, checkpoint: bool
) -> torch.Tensor:
    """CoOp's reference forward: all classes x 77 tokens through the text encoder, the image encoder on the batch."""
    text_model = clip.text_model
    hidden = text_model.embeddings(inputs_embeds=learner(text_model.embeddings.token_embedding))
    mask = create_causal_mask(
        config=text_model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None
    )
    for layer in text_model.encoder.layers:
        if checkpoint:
            hidden = torch.utils.checkpoint.checkpoint(layer, hidden, mask, is_causal=True, use_reentrant=False)
        else:
            hidden = layer(hidden, mask, is_causal=True)
    pooled = text_model.final_layer_norm(hidden[torch.arange(len(hidden)), learner.eot_positions])
    text = clip.text_projection(pooled)
    image = clip.get_image_features(pixel_values=pixel_values).pooler_output
    logits = clip.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    return F.cross_entropy(logits, labels)


def checkpointed_loss(model: CoOpModel, image_embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`CoOpModel`'s loss on image features, with the text features computed under activation checkpointing."""
    text = model.get_text_features(checkpoint=True)
    logits = model.clip.logit_scale.exp() * F.normalize(image_embeds, dim=-1) @ F.normalize(text, dim=-1).t()
    return F.cross_entropy(logits, labels)


def sgd(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.002, momentum=0.9, weight_decay=5e-4)


def training_step(
    loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Zero the gradients, forward, backward, optimizer step; returns the loss and the gradients it stepped with."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    gradients = [param.grad.clone() for group in optimizer.param_groups for param in group["params"]]
    optimizer.step()
    return loss.detach(), gradients


def time_interleaved_steps(
    losses: dict[str, Callable[[], torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer],
    times: dict[str, list[float]],
    repeats: int,
    device: torch.device,
) -> None:
    """`repeats` timed training steps of every mode of `times` (appended there), interleaved so that a drifting
    machine speed affects every mode alike."""
    for _ in range(repeats):
        for mode in times:
            start = time.perf_counter()
            training_step(losses[mode], optimizers[mode])
            synchronize(device)
            times[mode].append(time.perf_counter() - start)


def straightforward_against_ours(
    losses: dict[str, Callable[[], torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer],
    parameters: list[torch.nn.Parameter],
    device: torch.device,
    repeats: int,
) -> None:
    """The step benchmark of a method: a warm-up step of "straightforward" and of "ours" from the same tensors (each
    in its own peak-memory window), their losses and gradients compared, then `repeats` timed steps of each,
    interleaved so that drifting machine speed affects both alike; prints the check and one line per mode."""
    modes = ("straightforward", "ours")
    initial = [parameter.detach().clone() for parameter in parameters]
    peaks, before, first, times = {}, {}, {}, {mode: [] for mode in modes}
    for mode in modes:
        with torch.no_grad():
            for parameter, value in zip(parameters, initial, strict=True):
                parameter.copy_(value)
        reset_peak_memory(device)
        before[mode] = current_memory(device)
        first[mode] = training_step(losses[mode], optimizers[mode])
        synchronize(device)
        peaks[mode] = peak_memory(device)
    (reference_loss, reference_grads), (our_loss, our_grads) = first["straightforward"], first["ours"]
    loss_diff = abs(our_loss.item() - reference_loss.item()) / abs(reference_loss.item())
    grad_diff = max(
        ((ours - reference).norm() / reference.norm().clamp_min(1e-30)).item()
        for ours, reference in zip(our_grads, reference_grads, strict=True)
    )
    print(f"check: relative difference in loss {loss_diff:.1e}, largest in a gradient {grad_diff:.1e}")
    time_interleaved_steps(losses, optimizers, times, repeats, device)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    for mode in modes:
        print(
            f"{mode:>15}: median {medians[mode]:.3f} s (min {min(times[mode]):.3f}, max {max(times[mode]):.3f}), "
            f"{medians['straightforward'] / medians[mode]:.2f}x, peak {peaks[mode]:.2f} GiB "
            f"(+{peaks[mode] - before[mode]:.2f})"
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_clip(config_dir: Path, device: torch.device) -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(CLIPConfig.from_pretrained(config_dir)).eval().to(device)


def bench_steps(config_dir: Path, args: argparse.Namespace, device: torch.device) -> None:
    clip = build_clip(config_dir, device)
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    print(f"\n== {config_dir.name}: batch {args.batch_size}, n_ctx {args.n_ctx}, class position {args.position}, "
          f"{args.repeats} timed steps per mode (median), fp32 {device} ==")  # fmt: skip
    header = f"{'classes':>7} {'tokens':>9} {'mode':>17} {'median s':>9} {'min s':>7} {'max s':>7} {'vs ref':>7}"
    print(header + f" {'peak GiB':>9} {'+GiB':>6}  note")
    for num_classes in args.classes:
        bench_class_count(clip, tokenizer, num_classes, args, device)


def bench_class_count(
    clip: CLIPModel, tokenizer, num_classes: int, args: argparse.Namespace, device: torch.device
) -> None:
    model = CoOpModel.from_clip(
        clip, classnames(num_classes), tokenizer=tokenizer, n_ctx=args.n_ctx, class_token_position=args.position
    ).to(device)
    model.train()
    learner = model.prompt_learner
    prefix = shared_prefix_length(
        learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=False
    )
    reference = reference_learner(model).to(device)
    checkpoint_reference = num_classes >= args.reference_checkpoint_min_classes
    generator = torch.Generator().manual_seed(0)
    image_size = clip.config.vision_config.image_size
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (args.batch_size,), generator=generator).to(device)
    with torch.no_grad():
        image_embeds = clip.get_image_features(pixel_values=pixel_values).pooler_output

    losses = {
        "reference": lambda: reference_loss(clip, reference, pixel_values, labels, checkpoint_reference),
        "ours": lambda: model(pixel_values=pixel_values, labels=labels).loss,
        "cached": lambda: model(image_embeds=image_embeds, labels=labels).loss,
        "cached_checkpoint": lambda: checkpointed_loss(model, image_embeds, labels),
    }
    optimizers = {mode: sgd([reference.ctx if mode == "reference" else learner.ctx]) for mode in MODES}
    # "ours" and "reference" warm up first, from the same context, so their first steps can be compared.
    modes = [mode for mode in ("ours", "reference", "cached", "cached_checkpoint") if mode in args.modes]
    peaks, before, first, times = {}, {}, {}, {mode: [] for mode in modes}
    for mode in modes:  # the first step (warm-up unless --no_warmup), in its own peak-memory window
        reset_peak_memory(device)
        before[mode] = current_memory(device)
        start = time.perf_counter()
        first[mode] = training_step(losses[mode], optimizers[mode])
        synchronize(device)
        if args.no_warmup:
            times[mode].append(time.perf_counter() - start)
        peaks[mode] = peak_memory(device)
    if "reference" in first and "ours" in first:
        print(f"{'':>7} check: {compare(first['reference'], first['ours'])}")
    time_interleaved_steps(losses, optimizers, times, args.repeats - len(times[modes[0]]), device)

    medians = {mode: statistics.median(values) for mode, values in times.items()}
    for mode in modes:
        length = reference.input_ids.shape[1] if mode == "reference" else learner.input_ids.shape[1]
        tokens = f"{length}" if mode == "reference" else f"{length}/{prefix}"
        ratio = f"{medians['reference'] / medians[mode]:.1f}x" if "reference" in medians else "-"
        note = "activation checkpointing" if mode == "reference" and checkpoint_reference else ""
        print(
            f"{num_classes:>7} {tokens:>9} {mode:>17} {medians[mode]:>9.3f} {min(times[mode]):>7.3f} "
            f"{max(times[mode]):>7.3f} {ratio:>7} {peaks[mode]:>9.2f} {peaks[mode] - before[mode]:>6.2f}  {note}"
        )


def compare(reference: tuple[torch.Tensor, list[torch.Tensor]], ours: tuple[torch.Tensor, list[torch.Tensor]]) -> str:
    """Relative differences of the loss and the context gradient of two first steps from the same context."""
    (reference_loss_value, [reference_grad]), (our_loss, [our_grad]) = reference, ours
    loss_diff = (our_loss - reference_loss_value).abs().item() / reference_loss_value.abs().item()
    grad_diff = (our_grad - reference_grad).norm().item() / reference_grad.norm().item()
    return f"ours vs reference: relative difference in loss {loss_diff:.1e}, in context gradient {grad_diff:.1e}"


def bench_epoch(config_dir: Path, args: argparse.Namespace, device: torch.device) -> None:
    train = load_benchmark("oxford_flowers", args.data_dir)["train"]
    train = sample_few_shot(train, 16, seed=1)
    clip = build_clip(config_dir, device)
    model = CoOpModel.from_clip(
        clip, train.features["label"].names, tokenizer=AutoTokenizer.from_pretrained(config_dir), n_ctx=args.n_ctx
    ).to(device)
    model.train()
    processor = AutoImageProcessor.from_pretrained(config_dir)
    optimizer = sgd([model.prompt_learner.ctx])
    print(f"\n== {config_dir.name}: one epoch of 16-shot Flowers102 ({len(train)} images, 102 classes, "
          f"batch {args.batch_size}, {args.num_workers} DataLoader workers) ==")  # fmt: skip

    def epoch(loader: DataLoader, key: str) -> float:
        start = time.perf_counter()
        for batch in loader:
            inputs = {key: batch[key].to(device), "labels": batch["labels"].to(device)}
            training_step(lambda inputs=inputs: model(**inputs).loss, optimizer)
        synchronize(device)
        return time.perf_counter() - start

    pixels = with_coop_transform(train, processor, train=True)
    loader_options = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers)
    torch.manual_seed(0)
    uncached = epoch(DataLoader(pixels, **loader_options), "pixel_values")
    print(f"  image encoder every batch:     epoch {uncached:8.1f} s")
    with tempfile.TemporaryDirectory() as cache_dir:
        transform = CoOpTransform(processor, train=True)
        options = dict(num_views=1, seed=1, cache_dir=cache_dir, num_workers=args.num_workers)
        start = time.perf_counter()
        features = encode_images(clip, train, transform, **options)
        build = time.perf_counter() - start
        start = time.perf_counter()
        features = encode_images(clip, train, transform, **options)
        load = time.perf_counter() - start
        cached = epoch(DataLoader(features, batch_size=args.batch_size, shuffle=True), "image_embeds")
    print(f"  image-feature cache: building {build:8.1f} s (once per view), loading {load:.2f} s")
    print(f"  from cached features:          epoch {cached:8.1f} s  ({uncached / cached:.1f}x faster)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    for config_dir in args.clip_config:
        if args.classes:
            bench_steps(config_dir, args, device)
        if args.epoch:
            bench_epoch(config_dir, args, device)


if __name__ == "__main__":
    main()

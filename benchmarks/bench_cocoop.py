"""Time a CoCoOp training step: the reference computation against coop_hf's, on a random-weight CLIP architecture.

Modes, each a full step (forward, backward, SGD with momentum 0.9 and weight decay 5e-4 over the context and the
meta-network) on a batch of images, the image encoder included:
  reference  trainers/cocoop.py's computation: per image, the context shifted by the meta-network, then every class
             prompt at CLIP's full 77 tokens through the text encoder (through transformers' CLIP modules)
  ours       coop_hf.CoCoOpModel: prompts cut after the end-of-text token, each image's [SOS] + context prefix
             encoded once for all of its classes, per-class tokens packed without padding
Before timing, the first steps of both modes (same weights, same inputs) are compared. Times are medians over
interleaved steps after a warm-up step. Peak memory: on CPU, each mode's peak resident set during one step, in a
fresh process that builds the model and then takes that step (VmHWM, reset after building; "+GiB": the rise over
the resident set before the step); on CUDA, torch.cuda.max_memory_allocated in this process.

Example: python benchmarks/bench_cocoop.py --batch_sizes 1 4 --repeats 3
"""

from __future__ import annotations

import os

# On small VMs OpenMP's default spin-waiting can cost milliseconds per parallel op; passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_step import classnames, synchronize, training_step  # noqa: E402  (this folder)
from transformers import AutoTokenizer, CLIPConfig, CLIPModel  # noqa: E402
from transformers.masking_utils import create_causal_mask  # noqa: E402

from coop_hf import CoCoOpModel  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIT_B32 = SHARED / "clip-configs" / "clip-vit-base-patch32"
MODES = ("reference", "ours")
GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip_config", type=Path, default=VIT_B32, help="CLIP config folder (random weights)")
    parser.add_argument("--classes", type=int, default=102, help="the first N Flowers102 class names")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory processes (CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak_memory_of", choices=MODES, help=argparse.SUPPRESS)  # internal: one step, print RSS
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# -- the computations ----------------------------------------------------------------------------------------------


class Reference:
    """trainers/cocoop.py's forward on the model's weights: 77-token prompts [SOS] (ctx + pi(x)) <class>. [EOT]
    for every image and class, each image's prompts through the whole text encoder, pooled at the EOT."""

    def __init__(self, model: CoCoOpModel):
        self.model = model
        tokenizer, learner = model.tokenizer, model.prompt_learner
        full_length = model.clip.config.text_config.max_position_embeddings
        rows = [tokenizer(f"{model.config.ctx_init} {name}.")["input_ids"] for name in model.classnames]
        self.token_ids = torch.tensor([ids + [0] * (full_length - len(ids)) for ids in rows])
        self.eot_positions = self.token_ids.argmax(dim=-1)
        n_ctx = learner.ctx.shape[0]
        with torch.no_grad():
            embedding = model.clip.text_model.embeddings.token_embedding(self.token_ids.to(learner.ctx.device))
        self.token_prefix, self.token_suffix = embedding[:, :1], embedding[:, 1 + n_ctx :]

    def loss(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        clip, learner = self.model.clip, self.model.prompt_learner
        image_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        ctx_shifted = learner.ctx.unsqueeze(0) + self.model.meta_net(image_features).unsqueeze(1)
        num_classes = len(self.token_ids)
        logits = []
        for ctx_i, image_i in zip(ctx_shifted, image_features, strict=True):
            prompts = torch.cat([self.token_prefix, ctx_i.expand(num_classes, -1, -1), self.token_suffix], dim=1)
            text_features = self.text_encoder(prompts)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            logits.append(clip.logit_scale.exp() * image_i @ text_features.t())
        return F.cross_entropy(torch.stack(logits), labels)

    def text_encoder(self, prompts: torch.Tensor) -> torch.Tensor:
        text_model = self.model.clip.text_model
        hidden = text_model.embeddings(inputs_embeds=prompts)
        mask = create_causal_mask(config=text_model.config, inputs_embeds=hidden, attention_mask=None, cache=None)
        for layer in text_model.encoder.layers:
            hidden = layer(hidden, mask, is_causal=True)
        pooled = text_model.final_layer_norm(hidden[torch.arange(len(hidden)), self.eot_positions])
        return self.model.clip.text_projection(pooled)


def build(args: argparse.Namespace, device: torch.device) -> tuple[CoCoOpModel, Reference]:
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig.from_pretrained(args.clip_config)).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.clip_config)
    model = CoCoOpModel.from_clip(clip, classnames(args.classes), tokenizer=tokenizer).to(device)
    model.train()
    return model, Reference(model)


def inputs(model: CoCoOpModel, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch_size)
    size = model.clip.config.vision_config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    labels = torch.randint(0, len(model.classnames), (batch_size,), generator=generator)
    return pixel_values.to(device), labels.to(device)


def step_functions(model: CoCoOpModel, reference: Reference, pixel_values, labels) -> dict[str, Callable]:
    return {
        "reference": lambda: reference.loss(pixel_values, labels),
        "ours": lambda: model(pixel_values=pixel_values, labels=labels).loss,
    }


def sgd(model: CoCoOpModel) -> torch.optim.Optimizer:
    trainable = [param for param in model.parameters() if param.requires_grad]
    return torch.optim.SGD(trainable, lr=0.002, momentum=0.9, weight_decay=5e-4)


def memory_status(key: str) -> float:
    """GiB of a /proc/self/status entry (VmRSS: resident now, VmHWM: peak resident since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def reset_peak_resident() -> None:
    """Start a new peak-RSS window at the memory in use now (Linux), so that building the model is not counted."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # no reset: the lifetime peak (ru_maxrss) is reported


# -- measurements --------------------------------------------------------------------------------------------------


def peak_memory_step(args: argparse.Namespace) -> None:
    """In a fresh process: build, take one step of `args.peak_memory_of`, print its peak RSS as JSON."""
    device = torch.device("cpu")
    model, reference = build(args, device)
    pixel_values, labels = inputs(model, args.batch_sizes[0], device)
    step = step_functions(model, reference, pixel_values, labels)[args.peak_memory_of]
    optimizer = sgd(model)
    reset_peak_resident()
    before = memory_status("VmRSS")
    training_step(step, optimizer)
    peak = memory_status("VmHWM")
    if peak != peak:  # no /proc: the lifetime peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    print(json.dumps({"peak_gib": peak, "before_gib": before}))


def measure_peak_memory(args: argparse.Namespace, mode: str, batch_size: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--clip_config", str(args.clip_config), "--classes", str(args.classes)]
    command += ["--batch_sizes", str(batch_size), "--peak_memory_of", mode]
    if args.threads:
        command += ["--threads", str(args.threads)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(reference: tuple[torch.Tensor, list[torch.Tensor]], ours: tuple[torch.Tensor, list[torch.Tensor]]) -> str:
    """Relative differences of the loss and of every trained tensor's gradient between two first steps."""
    (reference_loss, reference_grads), (our_loss, our_grads) = reference, ours
    loss_diff = (our_loss - reference_loss).abs().item() / reference_loss.abs().item()
    grad_diff = max(
        (ours - ref).norm().item() / ref.norm().item() for ours, ref in zip(our_grads, reference_grads, strict=True)
    )
    return f"relative difference in loss {loss_diff:.1e}, in gradients (max over ctx and meta-net) {grad_diff:.1e}"


def bench_batch(model: CoCoOpModel, reference: Reference, batch_size: int, args, device: torch.device) -> None:
    pixel_values, labels = inputs(model, batch_size, device)
    steps = step_functions(model, reference, pixel_values, labels)
    initial = {name: tensor.clone() for name, tensor in model.prompt_state_dict().items()}
    first, times = {}, {mode: [] for mode in MODES}
    for mode in MODES:  # warm-up steps from the same weights, compared below
        model.load_prompt(initial)
        optimizer = sgd(model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        first[mode] = training_step(steps[mode], optimizer)
        synchronize(device)
    print(f"{'':>5} check: {compare(first['reference'], first['ours'])}")
    optimizer = sgd(model)
    for _ in range(args.repeats):  # interleaved, so that drifting machine speed affects both modes alike
        for mode in MODES:
            start = time.perf_counter()
            training_step(steps[mode], optimizer)
            synchronize(device)
            times[mode].append(time.perf_counter() - start)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    memory = {}
    if device.type == "cuda":
        for mode in MODES:
            torch.cuda.reset_peak_memory_stats(device)
            training_step(steps[mode], optimizer)
            memory[mode] = f"{torch.cuda.max_memory_allocated(device) / GIB:>9.2f}"
    elif not args.no_memory:
        for mode in MODES:
            measured = measure_peak_memory(args, mode, batch_size)
            memory[mode] = f"{measured['peak_gib']:>9.2f} {measured['peak_gib'] - measured['before_gib']:>6.2f}"
    for mode in MODES:
        tokens = reference.token_ids.shape[1] if mode == "reference" else model.prompt_learner.input_ids.shape[1]
        print(
            f"{batch_size:>5} {mode:>9} {tokens:>6} {medians[mode]:>9.3f} {min(times[mode]):>7.3f} "
            f"{max(times[mode]):>7.3f} {medians['reference'] / medians[mode]:>7.1f}x {memory.get(mode, '-'):>16}"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory_of:
        peak_memory_step(args)
        return
    device = torch.device(args.device)
    model, reference = build(args, device)
    threads, wait_policy = torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"]
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY={wait_policy}")
    config = model.config
    print(f"== {args.clip_config.name}: {args.classes} classes, n_ctx {config.n_ctx} ({config.ctx_init!r}), "
          f"{args.repeats} timed steps per mode (median), fp32 {device} ==")  # fmt: skip
    memory_header = "peak GiB" if device.type == "cuda" else "peak GiB   +GiB"
    print(f"{'batch':>5} {'mode':>9} {'tokens':>6} {'median s':>9} {'min s':>7} {'max s':>7} {'speedup':>8} "
          f"{memory_header:>16}")  # fmt: skip
    for batch_size in args.batch_sizes:
        bench_batch(model, reference, batch_size, args, device)


if __name__ == "__main__":
    main()

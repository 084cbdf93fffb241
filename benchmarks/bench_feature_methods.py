"""Whole-run times of the methods fitted on cached image features: Tip-Adapter, Tip-Adapter-F, LP++ and the CoOp
linear probe, on the same features of a K-shot x C-class split.

Each run is what `examples/train.py --method <name>` does for one seed once the image features are cached: the fit
(`trainer.train()`: Tip-Adapter's cache and its 200 x 20 (beta, alpha) search on the validation split, Tip-Adapter-F's
20 epochs of key fine-tuning at batch 256 before the search, LP++'s 300 full-batch epochs; the linear probe's search
for C) and the test evaluation. The features are synthetic CLIP-like ones (`bench_linear_probe.clip_like_splits`, 512
dims as ViT-B) with the reference's split sizes: Tip-Adapter's 10 cache views and 20 training views are the train
features plus noise, its validation split the whole one (--val_per_class per class), LP++'s and the linear probe's
the few-shot one (min(K, 4) per class). The text embeddings come from the ViT-B/32 architecture with random weights
(the times do not depend on the weights). Reports each method's median time over --repeats, with min and max.

Example: python benchmarks/bench_feature_methods.py --shots 16 --classes 100 --repeats 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_linear_probe.py

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_linear_probe import clip_like_splits  # noqa: E402
from transformers import AutoTokenizer, CLIPConfig, CLIPModel  # noqa: E402
from transformers.utils import logging  # noqa: E402

from coop_hf.baselines import fit_linear_probe  # noqa: E402
from coop_hf.runners.methods import PROMPT_METHODS  # noqa: E402
from coop_hf.training import CoOpTrainingArguments  # noqa: E402

VIT_B32 = Path(__file__).resolve().parents[2] / "shared" / "clip-configs" / "clip-vit-base-patch32"


class Features:
    """`FitData` on precomputed features (as the cache gives them once encoded)."""

    train = None

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, val, val_labels, full_val, full_val_labels):
        self.views, self.labels = views, labels
        self.val, self.full_val = (val, val_labels), (full_val, full_val_labels)

    def train_views(self, num_views: int, *, crop_scale, first_view: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views[first_view : first_view + num_views], self.labels

    def val_features(self, *, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.full_val if full else self.val


def timed(run) -> tuple[float, float]:
    """(seconds, test accuracy %) of one run."""
    start = time.perf_counter()
    accuracy = run()
    return time.perf_counter() - start, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--val_per_class", type=int, default=20, help="Tip-Adapter's whole validation split.")
    parser.add_argument("--test_per_class", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    dim, shots, classes = 512, options.shots, options.classes
    splits = clip_like_splits(shots, classes, dim, 0.0, False, options.test_per_class, seed=0)
    full_val = clip_like_splits(options.val_per_class, classes, dim, 0.0, False, 1, seed=0)["train"]  # same classes
    tensor = lambda split: (torch.tensor(split.features, dtype=torch.float32), torch.tensor(split.labels))  # noqa: E731
    train, labels = tensor(splits["train"])
    generator = torch.Generator().manual_seed(0)
    views = F.normalize(train + 0.05 * torch.randn(30, *train.shape, generator=generator), dim=-1)
    data = Features(views, labels, *tensor(splits["val"]), *tensor(full_val))
    test, test_labels = tensor(splits["test"])

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig.from_pretrained(VIT_B32)).eval()
    tokenizer = AutoTokenizer.from_pretrained(VIT_B32)
    classnames = [f"class {index}" for index in range(classes)]
    print(
        f"{shots} shots x {classes} classes, {dim}-d features, Tip-Adapter's val {options.val_per_class} per class, "
        f"test {options.test_per_class} per class, {torch.get_num_threads()} threads, {options.repeats} repeats"
    )
    with tempfile.TemporaryDirectory() as output_dir:
        for name in ("tip-adapter", "tip-adapter-f", "lp++"):
            method = PROMPT_METHODS[name]  # its model, its trainer and its recipe, as train.py runs it
            model = method.model_class.from_clip(clip, classnames, tokenizer=tokenizer, **method.settings)
            args = CoOpTrainingArguments(
                output_dir=output_dir, disable_tqdm=True, report_to=[], **method.recipe().training
            )
            run = partial(fit_and_test, model, method.trainer_class, args, data, test, test_labels)
            report(name, [timed(run) for _ in range(options.repeats)])

    def linear_probe() -> float:
        val, val_labels = data.val
        probe = fit_linear_probe(train.numpy(), labels.numpy(), val.numpy(), val_labels.numpy(), progress=False)
        return 100.0 * float((probe.predict(test.numpy()) == test_labels.numpy()).mean())

    report("linear-probe (CoOp's search for C)", [timed(linear_probe) for _ in range(options.repeats)])


def fit_and_test(model, trainer_class, args, data, test, test_labels) -> float:
    """Fit on the cached features, then the test accuracy (%)."""
    trainer_class(model=model, args=args, fit_data=data).train()
    with torch.no_grad():
        predictions = model(image_embeds=test).logits.argmax(-1)
    return 100.0 * float((predictions == test_labels).float().mean())


def report(name: str, runs: list[tuple[float, float]]) -> None:
    seconds = [run[0] for run in runs]
    print(f"{name:>36}: {statistics.median(seconds):7.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}), "
          f"test accuracy {runs[-1][1]:.2f} %")  # fmt: skip


if __name__ == "__main__":
    main()

"""Time the linear probe's search for C: scikit-learn's lbfgs as coop_hf ran it before against coop_hf's now.

Every mode runs the same search (`coop_hf.baselines.search_c`, CoOp's lpclip/linear_probe.py: the grid 1e6 ... 1e-6,
then bisection steps in log space) on the same L2-normalised features:
  sklearn    LogisticRegression(solver="lbfgs", C=C, max_iter=1000) fitted from scratch at each C, with the default
             thread pools (the reference; coop_hf's linear probe before)
  ours       coop_hf.baselines.fit_linear_probe: the same fits, with scipy's OpenBLAS limited to one thread (on a
             2-vCPU VM its threads and the OpenMP threads of scikit-learn's loss and of torch wait on each other)
  ours_warm  fit_linear_probe(warm_start=True): the first fit as ours, each later one in float64 torch (L-BFGS on
             scikit-learn's objective, with its stopping rule) from the fit at the nearest C already fitted
Features: per class a mean in a 64-d subspace, a component shared by every image, within-class noise mostly in that
subspace, L2-normalised; --noise_rate of the train labels (with --noise_val, of the val labels too) flipped to
another class. Val has min(K, 4) images per class, test --test_per_class. Per configuration and mode it reports the
search's median time over --repeats (min and max), the chosen C and its val and test accuracy, and scikit-learn's
val and test accuracy at that C.

Example: python benchmarks/bench_linear_probe.py --shots 16 4 --repeats 3
"""

from __future__ import annotations

import os

# On small VMs OpenMP's default spin-waiting can cost milliseconds per parallel op when the vCPUs are contended;
# passive waiting avoids that. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from coop_hf.baselines import _normalise, fit_linear_probe, search_c  # noqa: E402

MODES = ("sklearn", "ours", "ours_warm")


@dataclass
class Split:
    features: np.ndarray
    labels: np.ndarray


def clip_like_splits(
    shots: int, classes: int, dim: int, noise_rate: float, noise_val: bool, test_per_class: int, seed: int
) -> dict[str, Split]:
    """Train (`shots` per class), val (min(shots, 4) per class) and test splits of L2-normalised features: a shared
    component (mean cosine 0.56 between classes, 0.67 within one), a class mean and within-class noise, both mostly
    in a 64-d subspace; `noise_rate` of the train (and with `noise_val` the val) labels flipped to another class."""
    rng = np.random.default_rng(seed)
    subspace = np.linalg.qr(rng.normal(size=(dim, 64)))[0].T
    shared = 2.3 * _normalise(rng.normal(size=(1, dim)))
    means = rng.normal(size=(classes, 64)) / 8 @ subspace

    def sample(per_class: int, flip: bool) -> Split:
        labels = np.repeat(np.arange(classes), per_class)
        within = 1.7 * rng.normal(size=(len(labels), 64)) / 8 @ subspace
        features = shared + means[labels] + within + 0.5 * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
        if flip:
            wrong = rng.random(len(labels)) < noise_rate
            labels = labels.copy()
            labels[wrong] = (labels[wrong] + rng.integers(1, classes, wrong.sum())) % classes
        return Split(_normalise(features).astype(np.float32), labels)

    return {
        "train": sample(shots, flip=True),
        "val": sample(min(shots, 4), flip=noise_val),
        "test": sample(test_per_class, flip=False),
    }


def sklearn_search(train: Split, val: Split, bisection_steps: int) -> tuple[float, LogisticRegression]:
    """The reference: the search with scikit-learn's lbfgs fitted from scratch at every C."""
    features, fits = _normalise(train.features), {}

    def score(c: float) -> float:
        fits[c] = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(features, train.labels)
        return accuracy(fits[c], val) / 100

    best_c, _ = search_c(score, bisection_steps=bisection_steps, progress=False)
    return best_c, fits[best_c]


def accuracy(predictor, split: Split) -> float:
    return 100 * float((predictor.predict(_normalise(split.features)) == split.labels).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="+", default=[16, 4])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise_rate", type=float, default=0.5)
    parser.add_argument("--noise_val", action="store_true", help="flip val labels too (default: clean val)")
    parser.add_argument("--test_per_class", type=int, default=50)
    parser.add_argument("--data_seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bisection_steps", type=int, default=8)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    if "sklearn" not in args.modes:
        parser.error("--modes needs sklearn, the reference the others are compared with")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )

    # warm-up: first calls of torch and scikit-learn
    warm_up = clip_like_splits(2, 10, args.dim, args.noise_rate, False, 1, seed=0)
    fit_linear_probe(warm_up["train"].features, warm_up["train"].labels, warm_up["val"].features,
                     warm_up["val"].labels, warm_start=True, progress=False)  # fmt: skip

    rows = []
    for shots in args.shots:
        for data_seed in args.data_seeds:
            splits = clip_like_splits(
                shots, args.classes, args.dim, args.noise_rate, args.noise_val, args.test_per_class, data_seed
            )
            train, val, test = splits["train"], splits["val"], splits["test"]
            times, probes = {mode: [] for mode in args.modes}, {}
            for repeat in range(args.repeats):
                # alternate the order, so that a drifting machine speed affects every mode alike
                for mode in args.modes if repeat % 2 == 0 else args.modes[::-1]:
                    start = time.perf_counter()
                    if mode == "sklearn":
                        probes[mode] = sklearn_search(train, val, args.bisection_steps)
                    else:
                        probe = fit_linear_probe(
                            train.features, train.labels, val.features, val.labels,
                            bisection_steps=args.bisection_steps, warm_start=mode == "ours_warm", progress=False,
                        )  # fmt: skip
                        probes[mode] = probe.C, probe
                    times[mode].append(time.perf_counter() - start)
                    print(f"  {shots} shots, data seed {data_seed}, repeat {repeat}: {mode} {times[mode][-1]:.2f} s")
            sklearn_fits = {probes["sklearn"][0]: probes["sklearn"][1]}
            for mode in args.modes:
                c, predictor = probes[mode]
                if c not in sklearn_fits:
                    sklearn_fits[c] = LogisticRegression(C=c, solver="lbfgs", max_iter=1000)
                    sklearn_fits[c].fit(_normalise(train.features), train.labels)
                rows.append(
                    {
                        "shots": shots,
                        "seed": data_seed,
                        "mode": mode,
                        "times": times[mode],
                        "speed-up": statistics.median(times["sklearn"]) / statistics.median(times[mode]),
                        "C": c,
                        "val": accuracy(predictor, val),
                        "test": accuracy(predictor, test),
                        "sklearn val": accuracy(sklearn_fits[c], val),
                        "sklearn test": accuracy(sklearn_fits[c], test),
                    }
                )

    val_noise = f"{args.noise_rate:.0%} val label noise" if args.noise_val else "clean val"
    print(
        f"\n{args.classes} classes, {args.dim}-d, {args.noise_rate:.0%} train label noise, {val_noise}, "
        f"{args.bisection_steps} bisection steps; times: median (min-max) of {args.repeats}\n"
    )
    print(
        "| shots | data seed | mode | search s | speed-up | C | val % | test % | sklearn at this C: val % / test % |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        times = row["times"]
        print(
            f"| {row['shots']} | {row['seed']} | {row['mode']} "
            f"| {statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) | {row['speed-up']:.1f}x "
            f"| {row['C']:.4g} | {row['val']:.2f} | {row['test']:.2f} "
            f"| {row['sklearn val']:.2f} / {row['sklearn test']:.2f} |"
        )


if __name__ == "__main__":
    main()

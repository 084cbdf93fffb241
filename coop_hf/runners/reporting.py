"""Tables and figures of few-shot studies, from result rows.

A row is one seed of one run: a dict with `dataset`, `method` (its --method name), `shots` (0 for zero-shot CLIP),
`seed` and test scores in percent (`accuracy`, `macro_accuracy`), as `examples/sweep.py` writes them to
results.csv. Seeds are aggregated as CoOp's parse_test_res.py does: mean and population standard deviation
(ddof=0). The reference parses accuracies rounded to 0.1 % from its logs; rows keep full precision, so the last
digit can differ.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_directory
from ..backbones import family_name
from .methods import PROMPT_METHODS

Row = dict[str, Any]

ZEROSHOT = "zeroshot"
AVERAGE = "average"
"""The `dataset` of the rows `average_over_datasets` returns."""

DATASET_TITLES = {
    "imagenet": "ImageNet",
    "imagenet_v2": "ImageNet-V2",
    "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A",
    "imagenet_r": "ImageNet-R",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102",
    "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft",
    "sun397": "SUN397",
    "dtd": "DTD",
    "eurosat": "EuroSAT",
    "ucf101": "UCF101",
}
"""The paper's names of the CoOp benchmarks; any other dataset is shown by its --dataset name."""


def baseline_labels(family: str | None = None) -> dict[str, str]:
    """The baselines' display names on a backbone family: "Zero-shot CLIP", "Linear probe SigLIP", ..."""
    name = family_name(family)
    return {ZEROSHOT: f"Zero-shot {name}", "linear-probe": f"Linear probe {name}"}


def method_labels(methods: Iterable[str], family: str | None = None) -> dict[str, str]:
    """Display names: zero-shot CLIP (or the family's model), the linear probe, and each prompt method's
    `method_name` (its --method name where two methods share one)."""
    labels = baseline_labels(family)
    methods = list(dict.fromkeys(methods))
    for entry in methods:  # a study's variant "coop:class_token_position=middle": "CoOp (class_token_position=middle)"
        method, _, variant = entry.partition(":")
        if variant and method in PROMPT_METHODS:
            labels[entry] = f"{PROMPT_METHODS[method].display_name} ({variant.replace(',', ', ')})"
    names = {m: PROMPT_METHODS[m].display_name for m in methods if m in PROMPT_METHODS}
    for method in methods:
        name = names.get(method, method)
        labels.setdefault(method, name if list(names.values()).count(name) <= 1 else method)
    return labels


def dataset_title(dataset: str) -> str:
    """The paper's name of a CoOp benchmark; other datasets keep their name (a local path: its folder name)."""
    return DATASET_TITLES.get(dataset, os.path.basename(os.path.normpath(dataset)) or dataset)


def model_text(record: dict[str, Any]) -> str:
    """The backbone of a results record, as captions name it (a local path: its folder name)."""
    return os.path.basename(os.path.normpath(record["model_name_or_path"]))


def zero_shot_label(record: dict[str, Any]) -> str:
    """ "Zero-shot CLIP", or the zero-shot model of the record's backbone family."""
    return baseline_labels(record.get("backbone_family"))[ZEROSHOT]


def evaluation_text(evaluation: dict[str, Any] | None) -> str:
    """How captions name a record's realistic evaluation protocol (its `evaluation` field); "" under the papers'."""
    if not evaluation:
        return ""
    mean = evaluation.get("mean_shots")
    mean = "the shot count" if mean is None else f"{mean:g}"
    return (
        f"Realistic protocol: long-tailed shots (imbalance ratio {evaluation['imbalance_ratio']:g}, mean {mean} per "
        "class), no validation image, one recipe for every dataset."
    )


def seeds_text(record: dict[str, Any]) -> str:
    seeds = record["seeds"]
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _datasets(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(row["dataset"] for row in rows))


def _methods(rows: Sequence[Row]) -> list[str]:
    """Methods in order of appearance, zero-shot CLIP first."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    return sorted(methods, key=lambda method: method != ZEROSHOT)


def summarize(rows: Sequence[Row], metric: str = "accuracy") -> dict[tuple[str, int], tuple[float, float, int]]:
    """(mean, population std, number of seeds) of `metric` per (method, shots), over the rows of one dataset."""
    if len(_datasets(rows)) > 1:
        raise ValueError(
            f"These rows hold several datasets ({', '.join(_datasets(rows))}): summarise one dataset's rows, or "
            "the rows of average_over_datasets(rows)."
        )
    values: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        values.setdefault((row["method"], int(row["shots"])), []).append(float(row[metric]))
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in values.items()}


def average_over_datasets(rows: Sequence[Row], metric: str = "accuracy") -> list[Row]:
    """Rows of the average over datasets (`dataset` "average"): for each (method, shots, seed) that every dataset
    holds, the mean of `metric` over the datasets. Seeds are then aggregated as for one dataset, so the std is the
    spread over seeds of the dataset average."""
    datasets = _datasets(rows)
    by_key: dict[tuple[str, int, int], dict[str, float]] = {}
    for row in rows:
        by_key.setdefault((row["method"], int(row["shots"]), int(row["seed"])), {})[row["dataset"]] = row[metric]
    return [
        {"dataset": AVERAGE, "method": method, "shots": shots, "seed": seed, metric: float(np.mean(list(v.values())))}
        for (method, shots, seed), v in by_key.items()
        if len(v) == len(datasets)
    ]


def _cell(mean: float, std: float, count: int, method: str, published: float | None = None) -> str:
    # Zero-shot CLIP does not depend on the seed, and one seed has no spread: both show the mean alone.
    text = f"{mean:.2f}" if method == ZEROSHOT or count == 1 else f"{mean:.2f} ± {std:.2f}"
    return text if published is None else f"{text} (paper {published:.2f})"


def results_table(
    rows: Sequence[Row],
    *,
    metric: str = "accuracy",
    labels: dict[str, str] | None = None,
    published: dict[tuple[str, int], float] | None = None,
) -> str:
    """A markdown table of one dataset's rows (or of `average_over_datasets`): one row per method, one column per
    shot count (zero-shot CLIP in the 0-shot column), cells "mean ± std" over seeds, followed by "(paper x)" where
    `published` holds the paper's figure of the (method, shots); "–" where nothing ran."""
    summary = summarize(rows, metric)
    published = published or {}
    labels = {**method_labels(row["method"] for row in rows), **(labels or {})}
    shots = sorted({key[1] for key in summary})
    header = ["Method", *(f"{k} shot{'s' if k != 1 else ''}" for k in shots)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in _methods(rows):
        cells = [
            _cell(*summary[method, k], method, published.get((method, k))) if (method, k) in summary else "–"
            for k in shots
        ]
        lines.append(f"| {labels[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(
    rows: Sequence[Row],
    *,
    intro: str = "",
    metric: str = "accuracy",
    labels: dict[str, str] | None = None,
    published: dict[tuple[str, str, int], float] | None = None,
) -> str:
    """A markdown document: `intro`, the "Average over N datasets" table (with several datasets), then one table
    per dataset; `published` holds the papers' figures per (dataset or `AVERAGE`, method, shots)."""
    datasets = _datasets(rows)
    published = published or {}

    def table(dataset: str, dataset_rows: Sequence[Row]) -> str:
        figures = {(method, shots): value for (where, method, shots), value in published.items() if where == dataset}
        return results_table(dataset_rows, metric=metric, labels=labels, published=figures)

    sections = [intro.strip()] if intro.strip() else []
    if len(datasets) > 1:
        average = average_over_datasets(rows, metric)
        sections.append(f"## Average over {len(datasets)} datasets\n\n{table(AVERAGE, average)}")
    for dataset in datasets:
        sections.append(
            f"## {dataset_title(dataset)}\n\n{table(dataset, [row for row in rows if row['dataset'] == dataset])}"
        )
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"


LEGEND_INSIDE = 7
"""Lines a legend may hold over a plot; with more it goes beside it (under the panels of `all.png`)."""


def draw_shot_curves(
    ax: Any,
    rows: Sequence[Row],
    *,
    title: str,
    metric: str = "accuracy",
    labels: dict[str, str] | None = None,
    legend: bool = True,
) -> None:
    """Draw `metric` against shots on a matplotlib Axes: one line per method with a ± std band over seeds, and
    zero-shot CLIP as a star at 0 shots with a dashed line at its level. Shot counts are evenly spaced (log2);
    the 0-shot position sits one step left of the smallest shot count. The legend (unless `legend` is False) sits
    over the plot, or beside it past `LEGEND_INSIDE` lines."""
    summary = summarize(rows, metric)
    labels = {**method_labels(row["method"] for row in rows), **(labels or {})}
    shots = sorted({k for _, k in summary if k > 0})
    zero_x = math.log2(shots[0]) - 1 if shots else 0.0
    ticks = {k: math.log2(k) for k in shots}
    # As in CoOp's figure: the linear probe dotted purple (C4), prompt methods from blue (C0) on; grey is zero-shot's.
    # Past 8 methods the colours come round again with another marker.
    palette = [f"C{index}" for index in range(10) if index not in (4, 7)]
    styles = iter([(color, marker) for marker in "o^Dvsp<>" for color in palette])
    for method in _methods(rows):
        points = sorted((k, *summary[method, k][:2]) for m, k in summary if m == method)
        label = labels[method]
        if method == ZEROSHOT:
            level = points[0][1]
            ax.axhline(level, color="0.35", linestyle="--", linewidth=1.2, zorder=1)
            ax.plot([zero_x], [level], marker="*", markersize=14, color="0.35", linestyle="none", zorder=3,
                    label=f"{label} ({level:.2f})")  # fmt: skip
            continue
        x = np.array([ticks[k] for k, _, _ in points])
        mean, std = np.array([p[1] for p in points]), np.array([p[2] for p in points])
        linear = method == "linear-probe"
        color, marker = ("C4", "s") if linear else next(styles)
        ax.plot(x, mean, color=color, linestyle=":" if linear else "-", marker=marker, markersize=5, linewidth=2,
                label=label, zorder=2)  # fmt: skip
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    ax.set_xticks([zero_x, *ticks.values()], ["0", *(str(k) for k in ticks)])
    ax.set_xlim(zero_x - 0.4, (max(ticks.values()) if ticks else zero_x) + 0.4)
    ax.set_xlabel("Labelled training images per class (shots)")
    ax.set_ylabel(f"Test {metric.replace('_', ' ')} (%)")
    ax.set_title(title, fontweight="bold" if title.startswith("Average") else "normal")
    ax.margins(y=0.1)
    ax.grid(True, color="white", linewidth=1)
    ax.set_facecolor("#EBEBEB")
    ax.set_axisbelow(True)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    if legend and len(_methods(rows)) > LEGEND_INSIDE:  # beside the plot, not over the curves
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title=_spread(rows), title_fontsize=8)
    elif legend:
        ax.legend(loc="best", fontsize=8, framealpha=0.9, title=_spread(rows), title_fontsize=8)


def _spread(rows: Sequence[Row]) -> str:
    seeds = len({row["seed"] for row in rows})
    return f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_directory(path.parent) as staging:
        figure.savefig(staging / path.name, dpi=150, bbox_inches="tight")
    return path


def plot_shot_curves(
    rows: Sequence[Row],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    metric: str = "accuracy",
    labels: dict[str, str] | None = None,
) -> Path:
    """Write a PNG of `metric` against shots (see `draw_shot_curves`) for one dataset's rows (or the rows of
    `average_over_datasets`); the title defaults to the dataset's name."""
    if title is None:
        datasets = _datasets(rows)
        title = "Average" if datasets == [AVERAGE] else ", ".join(dataset_title(d) for d in datasets)
    figure = Figure(figsize=(5.5, 4.2), layout="constrained")
    draw_shot_curves(figure.subplots(), rows, title=title, metric=metric, labels=labels)
    return _save(figure, path)


def plot_sweep(
    rows: Sequence[Row],
    directory: str | os.PathLike,
    *,
    metric: str = "accuracy",
    labels: dict[str, str] | None = None,
) -> list[Path]:
    """The figures of a study in `directory`: `<dataset>.png` per dataset and, with several datasets,
    `average.png` and `all.png` (the average and every dataset side by side, as CoOp's Figure 3)."""
    directory = Path(directory)
    datasets = _datasets(rows)
    panels = [(dataset_title(d), [row for row in rows if row["dataset"] == d], d) for d in datasets]
    if len(datasets) > 1:
        panels.insert(0, (f"Average over {len(datasets)} datasets", average_over_datasets(rows, metric), AVERAGE))
    paths = [
        plot_shot_curves(panel_rows, directory / f"{name}.png", title=title, metric=metric, labels=labels)
        for title, panel_rows, name in panels
    ]
    if len(panels) > 1:
        columns = min(len(panels), 3)
        grid = math.ceil(len(panels) / columns)
        figure = Figure(figsize=(5 * columns, 3.9 * grid), layout="constrained")
        axes = np.atleast_1d(figure.subplots(grid, columns)).ravel()
        shared_legend = len(_methods(rows)) > LEGEND_INSIDE  # one legend under the panels
        for ax, (title, panel_rows, _) in zip(axes, panels, strict=False):
            draw_shot_curves(ax, panel_rows, title=title, metric=metric, labels=labels, legend=not shared_legend)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if shared_legend:
            handles, names = axes[0].get_legend_handles_labels()
            figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=9,
                          title=_spread(rows), title_fontsize=9)  # fmt: skip
        figure.suptitle(f"Few-shot test {metric.replace('_', ' ')} against shots", fontsize=13)
        paths.append(_save(figure, directory / "all.png"))
    return paths


def rows_csv(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """`rows` as CSV text with these columns (a missing value is left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_rows_csv(path: str | os.PathLike) -> list[Row]:
    """Rows from a CSV that `rows_csv` wrote: shots and seed as int, scores as float."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key in ("shots", "seed"):
                row[key] = int(value)
            elif key.endswith("accuracy") and value != "":
                row[key] = float(value)
    return rows


def plot_noise_curves(runs: Sequence[Row], path: str | os.PathLike, *, title: str) -> Path:
    """Write a PNG of test accuracy against the label-noise rate: one line per study method (its `study_method`
    label), mean ± population std over seeds (from each run's `per_seed`) as a band."""
    figure = Figure(figsize=(6, 4.2), layout="constrained")
    ax = figure.subplots()
    for index, label in enumerate(dict.fromkeys(run["study_method"] for run in runs)):
        points = sorted(
            (100 * run["noise_rate_requested"], [seed["accuracy"] for seed in run["per_seed"]])
            for run in runs
            if run["study_method"] == label
        )
        x = np.array([rate for rate, _ in points])
        mean = np.array([np.mean(values) for _, values in points])
        std = np.array([np.std(values) for _, values in points])
        linear = label.startswith(("Linear probe", "Classifier"))
        ax.plot(x, mean, marker="s" if linear else "o", linestyle=":" if linear else "-", color=f"C{index}",
                linewidth=2, markersize=5, label=label)  # fmt: skip
        ax.fill_between(x, mean - std, mean + std, color=f"C{index}", alpha=0.15, linewidth=0)
    ax.set_xlabel("Noisy labels in the few-shot training split (%)")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, color="white", linewidth=1)
    ax.set_facecolor("#EBEBEB")
    ax.set_axisbelow(True)
    seeds = max(len(run["per_seed"]) for run in runs)
    ax.legend(loc="best", fontsize=8, title=f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed",
              title_fontsize=8)  # fmt: skip
    return _save(figure, path)


def plot_confusion(
    true_labels: Sequence[int], given_labels: Sequence[int], classnames: Sequence[str], path: str | os.PathLike,
    *, title: str, xlabel: str, ylabel: str,
) -> Path:  # fmt: skip
    """Write a PNG of the confusion matrix (rows: `true_labels`, columns: `given_labels`), each row normalised to
    the fraction of its images; class names label the axes when there are at most 40 classes."""
    from sklearn.metrics import confusion_matrix

    labels = list(range(len(classnames)))
    counts = confusion_matrix(true_labels, given_labels, labels=labels).astype(float)
    fractions = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    named = len(classnames) <= 40
    size = 4 + min(len(classnames), 40) * 0.12  # room for the names; unnamed, 100 classes read as well at 8.8 in
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(fractions, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of the row's images")
    if named:
        ax.set_xticks(labels, classnames, rotation=90, fontsize=7)
        ax.set_yticks(labels, classnames, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    off_diagonal = 100 * (1 - np.trace(counts) / max(counts.sum(), 1))
    ax.set_title(f"{title}\n{off_diagonal:.1f} % off the diagonal")
    return _save(figure, path)


def plot_gradient_flow(curves: dict[str, Sequence[Sequence[Row]]], path: str | os.PathLike, *, title: str) -> Path:
    """Write a PNG of the gradient flow over training (PTNL's robustness attribution): one panel per model (`curves`
    maps its label to one list of `gradient_flow.step_records` per seed), the mean per-sample gradient norm of the
    clean and of the noisy samples at each step, averaged over the seeds."""
    columns = min(len(curves), 3)
    rows = math.ceil(len(curves) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (label, seeds) in zip(axes, curves.items(), strict=False):  # a grid may have spare axes
        for name, color in (("clean", "C0"), ("noisy", "C3")):
            by_step: dict[int, list[float]] = {}
            for records in seeds:
                for record in records:
                    if record[name] is not None:
                        by_step.setdefault(record["step"], []).append(record[name])
            if not by_step:  # e.g. no noisy sample in the split
                continue
            steps = np.array(sorted(by_step))
            means = np.array([np.mean(by_step[step]) for step in steps])
            # Per-step values jump with the batch drawn: long runs get a moving average over a 25th of the steps.
            window = max(len(steps) // 25, 1)
            if window > 1:
                ax.plot(steps, means, color=color, linewidth=0.6, alpha=0.3)
            smooth = np.convolve(means, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color=color, linewidth=1.6, label=f"{name} samples")
        ax.set_title(label, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel("mean per-sample gradient norm")
        ax.grid(True, color="white", linewidth=1)
        ax.set_facecolor("#EBEBEB")
        ax.set_axisbelow(True)
        ax.legend(loc="best", fontsize=8)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    seeds = max(len(seed_records) for seed_records in curves.values())
    figure.suptitle(f"{title}\n(mean over {seeds} seeds)" if seeds > 1 else title)
    return _save(figure, path)

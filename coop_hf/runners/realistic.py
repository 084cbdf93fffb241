"""The evaluation protocol of a run: the papers' (`papers`, the default) or the realistic one (`realistic`).

Not to be confused with the study protocol of the recipes (`coop_hf.methods.recipes.PROTOCOLS`: few-shot,
base-to-new, ...). The realistic protocol (`docs/studies/realistic.md`) follows CLAP (Silva-Rodriguez et al., CVPR
2024), 2SFS (Farina et al., CVPR 2025) and "Few-Shot, Now for Real" (MICCAI 2025):

- validation-free: no validation image is read; a method that searches or selects on the validation split uses one
  fixed setting (`VALIDATION_FREE_SETTINGS`, `LINEAR_PROBE_C`);
- one recipe for every dataset: the recipes' per-dataset epochs and settings, the configs' per-dataset settings
  (Tip-Adapter's alpha, beta and search grid) and CoOp's ImageNet epochs are not applied; only the dataset's class
  prompt templates are kept (`CLASS_PROMPT_SETTINGS`), as zero-shot CLIP keeps its template;
- imbalanced support sets: per-class shot counts from a seeded long-tailed profile (`coop_hf.data.imbalance`).
"""

from __future__ import annotations

from typing import Any

EVALUATION_PROTOCOLS: dict[str, str] = {"papers": "papers' protocol", "realistic": "realistic protocol"}
"""The evaluation protocols (`--protocol`), and how tables name them."""

DEFAULT_IMBALANCE_RATIO = 10.0
"""Largest over smallest per-class shot count of the realistic protocol's support sets (`--imbalance_ratio`)."""

LINEAR_PROBE_C = 1.0
"""The linear probe's fixed inverse regularisation under the realistic protocol: scikit-learn's default C of
`LogisticRegression` (CoOp searches C on the validation split)."""

VALIDATION_FREE_SETTINGS: dict[str, Any] = {"search_steps": [0, 0], "keep_epoch": "last"}
"""Prompt settings forced under the realistic protocol where a method's config has them: Tip-Adapter searches no
alpha and beta and keeps its config's initial ones (the reference's general, ImageNet, values: alpha 1.17, beta 1);
Tip-Adapter-F and LP++ keep their last epoch instead of the one of best validation accuracy (the fixed budget of
CLAP's and 2SFS's protocols)."""

CLASS_PROMPT_SETTINGS = ("template", "templates")
"""The per-dataset settings kept under the realistic protocol: the dataset's class prompts (part of how the dataset
names its classes, as zero-shot CLIP's template), not tuned hyperparameters."""


def check_evaluation(evaluation: str) -> None:
    """Refuse an unknown `--protocol`."""
    if evaluation not in EVALUATION_PROTOCOLS:
        raise ValueError(
            f"Unknown --protocol {evaluation!r}: use {' or '.join(EVALUATION_PROTOCOLS)} (the evaluation protocol)."
        )


def realistic_settings(dataset_settings: dict[str, Any], prompt_settings: tuple[str, ...]) -> dict[str, Any]:
    """A config's per-dataset settings under the realistic protocol: its class prompts only, with the
    `VALIDATION_FREE_SETTINGS` the config has."""
    kept = {key: value for key, value in dataset_settings.items() if key in CLASS_PROMPT_SETTINGS}
    return kept | {key: value for key, value in VALIDATION_FREE_SETTINGS.items() if key in prompt_settings}


ZEROSHOT = "zeroshot"
AVERAGE = "Average"


def _means(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], float]:
    """Mean test accuracy over seeds per (dataset, method, shots), from the rows of a sweep's results.csv."""
    grouped: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        grouped.setdefault((row["dataset"], row["method"], int(row["shots"])), []).append(float(row["accuracy"]))
    means = {key: sum(values) / len(values) for key, values in grouped.items()}
    datasets = sorted({dataset for dataset, _, _ in means})
    for method, shots in sorted({(method, shots) for _, method, shots in means}):
        values = [means.get((dataset, method, shots)) for dataset in datasets]
        if len(datasets) > 1 and None not in values:
            means[(AVERAGE, method, shots)] = sum(values) / len(values)
    return means


def compare_protocols(papers: list[dict[str, Any]], realistic: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per dataset (and their average), method and shot count run under both protocols: the mean test
    accuracy under each, the difference (realistic - papers), zero-shot CLIP's accuracy and whether each protocol's
    accuracy falls below it. Zero-shot CLIP reads no shot and no validation image: its accuracy is the papers'."""
    papers_means, realistic_means = _means(papers), _means(realistic)
    zero_shot = {dataset: value for (dataset, method, _), value in papers_means.items() if method == ZEROSHOT}
    entries = []
    for key in sorted(papers_means.keys() & realistic_means.keys(), key=lambda k: (k[0] == AVERAGE, k)):
        dataset, method, shots = key
        if method == ZEROSHOT:
            continue
        before, after, floor = papers_means[key], realistic_means[key], zero_shot.get(dataset)
        entries.append({
            "dataset": dataset, "method": method, "shots": shots, "papers": before, "realistic": after,
            "difference": after - before, "zeroshot": floor,
            "papers_below_zeroshot": floor is not None and before < floor,
            "realistic_below_zeroshot": floor is not None and after < floor,
        })  # fmt: skip
    return entries


def comparison_markdown(entries: list[dict[str, Any]], *, intro: str = "") -> str:
    """The side-by-side table of `compare_protocols`: papers | realistic | difference, † below zero-shot CLIP."""
    lines = [intro, ""] if intro else []
    lines += [
        "| Dataset | Method | Shots | Zero-shot | Papers' protocol | Realistic protocol | Difference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry in entries:
        floor = "" if entry["zeroshot"] is None else f"{entry['zeroshot']:.2f}"
        papers = f"{entry['papers']:.2f}" + (" †" if entry["papers_below_zeroshot"] else "")
        realistic = f"{entry['realistic']:.2f}" + (" †" if entry["realistic_below_zeroshot"] else "")
        lines.append(
            f"| {entry['dataset']} | {entry['method']} | {entry['shots']} | {floor} | {papers} | {realistic} | "
            f"{entry['difference']:+.2f} |"
        )
    lines += ["", "† below zero-shot CLIP on the dataset. Difference: realistic minus papers' (points of accuracy)."]
    return "\n".join(lines) + "\n"


def plot_comparison(entries: list[dict[str, Any]], path: Any) -> None:
    """Bars of each method's accuracy under both protocols (the average over datasets where there are several, else
    the one dataset), a dashed line at zero-shot CLIP, hatched bars below it; one panel per shot count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = {entry["dataset"] for entry in entries}
    shown = AVERAGE if AVERAGE in datasets else sorted(datasets)[0]
    chosen = [entry for entry in entries if entry["dataset"] == shown]
    shot_counts = sorted({entry["shots"] for entry in chosen})
    figure, axes = plt.subplots(1, len(shot_counts), figsize=(4 + 2.5 * len(shot_counts), 4), squeeze=False)
    for axis, shots in zip(axes[0], shot_counts, strict=True):
        panel = [entry for entry in chosen if entry["shots"] == shots]
        for offset, protocol in ((-0.2, "papers"), (0.2, "realistic")):
            bars = axis.bar(
                [index + offset for index in range(len(panel))], [entry[protocol] for entry in panel], width=0.4,
                label=EVALUATION_PROTOCOLS[protocol],
            )  # fmt: skip
            for bar, entry in zip(bars, panel, strict=True):
                if entry[f"{protocol}_below_zeroshot"]:
                    bar.set_hatch("//")
        floors = {entry["zeroshot"] for entry in panel if entry["zeroshot"] is not None}
        if floors:
            axis.axhline(floors.pop(), color="black", linestyle="--", linewidth=1, label="zero-shot CLIP")
        axis.set_xticks(range(len(panel)), [entry["method"] for entry in panel], rotation=30, ha="right")
        axis.set_title(f"{shown}, {shots} shots (mean)")
        axis.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

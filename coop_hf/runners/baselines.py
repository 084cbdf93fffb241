"""The baselines on an experiment's splits: zero-shot CLIP and the linear probe."""

from __future__ import annotations

from typing import Any

from ..baselines import fit_linear_probe
from ..data import ensemble_templates
from ..training import CoOpTrainingArguments
from .experiment import Experiment
from .realistic import LINEAR_PROBE_C
from .records import accuracy_percent, announce, noise_fields, noise_summary, seeds_heading
from .settings import RunSettings


def zeroshot_run_config(experiment: Experiment) -> dict[str, Any]:
    """The run configuration of `run_zeroshot` (see `Experiment.run_config`)."""
    templates = ensemble_templates(experiment.dataset)
    return experiment.run_config("zeroshot", template=experiment.template, templates_ensemble=templates)


def run_zeroshot(experiment: Experiment, run: RunSettings, args: CoOpTrainingArguments) -> dict[str, Any]:
    """Zero-shot CLIP with the dataset template (`accuracy`) and the template ensemble (`accuracy_ensemble`);
    seed-independent, reported once per seed of `run` for a uniform record."""
    experiment.prepare(args, zeroshot_run_config(experiment))
    templates = ensemble_templates(experiment.dataset)
    seeds = " ".join(map(str, run.seeds))
    announce(
        args, f"zeroshot | {experiment.dataset} | seeds {seeds}: CLIP with the template and the "
        f"{len(templates)}-template ensemble (seed-independent: one evaluation)",
    )  # fmt: skip
    ensemble = experiment.zero_shot_accuracy(templates)
    return experiment.results(
        "zeroshot", 0, run.seeds, [{"seed": seed, **experiment.zeroshot} for seed in run.seeds],
        template=experiment.template, accuracy_ensemble=ensemble["accuracy"], templates_ensemble=templates,
    )  # fmt: skip


def linear_probe_run_config(experiment: Experiment, run: RunSettings) -> dict[str, Any]:
    """The run configuration of `run_linear_probe` with these settings (see `Experiment.run_config`)."""
    run.check_shots()
    evaluation = run.evaluation_fields()
    if evaluation:
        evaluation["evaluation"]["linear_probe_C"] = LINEAR_PROBE_C
    return experiment.run_config(
        "linear-probe", shots=run.shots, allow_fewer_shots=run.allow_fewer_shots, **run.noise.fields(), **evaluation
    )


def run_linear_probe(experiment: Experiment, run: RunSettings, args: CoOpTrainingArguments) -> dict[str, Any]:
    """The linear probe on each seed's few-shot features, C chosen on its validation split (the loss and the
    callbacks of `run` do not apply); under the realistic evaluation protocol, at the fixed `LINEAR_PROBE_C`."""
    backbone, shots, noise = experiment.backbone, run.shots, run.noise
    config = linear_probe_run_config(experiment, run)
    # drawn (and their images read) before the directory is claimed, as for the prompt methods
    shots_per_class = {seed: run.shots_per_class(len(experiment.classnames), seed) for seed in run.seeds}
    splits_by_seed = {seed: experiment.few_shot(shots, seed, noise=noise, allow_fewer=run.allow_fewer_shots,
                                                shots_per_class=shots_per_class[seed])
                      for seed in run.seeds}  # fmt: skip
    experiment.prepare(args, config)
    per_seed = []
    for position, seed in enumerate(run.seeds, start=1):
        heading = seeds_heading("linear-probe", experiment.dataset, shots, seed, position, len(run.seeds))
        how = f"C fixed at {LINEAR_PROBE_C:g}" if run.realistic else "C searched on the validation split"
        announce(args, f"{heading}: fitting on the few-shot features, {how}")
        splits, report = splits_by_seed[seed]
        train = backbone.features(splits["train"], batch_size=experiment.batch_size)
        # realistic: no validation split; the fit at the fixed C reports its training accuracy as val_accuracy
        val = train if run.realistic else backbone.features(splits["val"], batch_size=experiment.batch_size)
        probe = fit_linear_probe(
            train["image_embeds"].numpy(),
            train["labels"].numpy(),
            val["image_embeds"].numpy(),
            val["labels"].numpy(),
            C=LINEAR_PROBE_C if run.realistic else None,
        )
        scores = accuracy_percent(probe.predict(experiment.test["image_embeds"].numpy()), experiment.test["labels"])
        announce(args, f"{heading}: test accuracy {scores['accuracy']:.2f} % (C = {probe.C:g})")
        counts = {"shots_per_class": shots_per_class[seed]} if run.realistic else {}
        per_seed.append({"seed": seed, **scores, "C": probe.C, **noise_fields(noise, report), **counts})
    return experiment.results(
        "linear-probe", shots, run.seeds, per_seed, **noise_summary(noise, per_seed), **run.evaluation_fields()
    )

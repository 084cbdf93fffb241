"""Unsupervised prompt learning (UPL) on an experiment: zero-shot pseudo-labels, one prompt per seed on the most
confident ones, and the ensemble that averages the seeds' logits."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import torch

from ..baselines import zero_shot_logits, zero_shot_weights
from ..data import column_values, ensemble_templates
from ..methods.coop import CoOpModel
from ..methods.upl import CoOpEnsemble, pseudo_label_accuracy, pseudo_label_dataset
from ..training import CoOpTrainingArguments
from .experiment import Experiment, LoadedBackbone
from .prompt_learning import PromptLearning, PromptRun, prompt_fields
from .records import accuracy_percent, announce, training_fields
from .settings import RunSettings

UPL_EPOCHS = 50  # UPL trains 50 epochs on its pseudo-labelled images
UPL_MEMBERS = PromptLearning("upl", CoOpModel)


def run_upl(
    experiment: Experiment,
    run: RunSettings,
    args: CoOpTrainingArguments,
    settings: dict[str, Any],
    *,
    pseudo_label_templates: str = "dataset",
    pseudo_label_models: list[str] | None = None,
) -> dict[str, Any]:
    """Pseudo-label the unlabeled train split with zero-shot CLIP (the dataset template, or the template
    "ensemble"; with `pseudo_label_models`, the mean of those backbones' zero-shot probabilities: UPL*), keep the
    `run.shots` (top k) most confident images per predicted class, train one CoOp prompt per seed of `run` on them,
    and evaluate the ensemble that averages the seeds' logits. Classes left with fewer than k images are announced
    and listed in `pseudo_label_shortfall`.

    The ensemble is saved (with its model card) in `args.output_dir/ensemble` and pushed to `args.hub_model_id`
    with `args.push_to_hub`. The true train labels are used only to report `pseudo_label_accuracy`.
    """
    if pseudo_label_templates not in ("dataset", "ensemble"):
        raise ValueError(f"pseudo_label_templates must be 'dataset' or 'ensemble', got {pseudo_label_templates!r}.")
    templates = [experiment.template]
    if pseudo_label_templates == "ensemble":
        templates = ensemble_templates(experiment.dataset)
    if run.noise.active:
        raise ValueError("UPL learns from zero-shot pseudo-labels, not given ones: drop --noise_type / --noise_rate.")
    top_k, seeds = run.shots, run.seeds
    epochs = args.num_train_epochs or math.ceil(UPL_EPOCHS / max(args.cached_views, 1))
    planned = PromptRun(UPL_MEMBERS, experiment, run, args, epochs, UPL_MEMBERS.prompt_config(experiment, settings))
    prompt = prompt_fields(planned.prompt_config)
    labellers = list(pseudo_label_models or [experiment.backbone.name_or_path])
    config = experiment.run_config(
        "upl", pseudo_top_k=top_k, pseudo_label_templates=templates, pseudo_label_models=labellers, prompt=prompt,
        training=training_fields(args, epochs), **run.loss_fields(),
    )  # fmt: skip
    continued = experiment.prepare(args, config)
    backbone = experiment.backbone
    unlabeled = experiment.splits["train"]
    probabilities = torch.stack(
        [
            zero_shot_probabilities(
                backbone if name == backbone.name_or_path else LoadedBackbone.load(name, cache_dir=backbone.cache_dir),
                unlabeled,
                experiment.classnames,
                templates,
                batch_size=experiment.batch_size,
            )  # fmt: skip
            for name in labellers
        ]
    ).mean(dim=0)
    pseudo = pseudo_label_dataset(unlabeled, probabilities.log(), top_k)  # softmax(log p) = p
    shortfall = pseudo_label_shortfall(pseudo, top_k)
    for classname, count in shortfall.items():
        announce(args, f"UPL: class {classname!r} has {count} pseudo-labelled image(s), fewer than the {top_k} asked")
    per_seed = planned.train_seeds(
        lambda seed: (datasets.DatasetDict({"train": pseudo}), None), push=False, continued=continued
    )
    members = [
        CoOpModel.from_pretrained(result["prompt_dir"], clip_model=backbone.clip, tokenizer=backbone.tokenizer)
        for result in per_seed
    ]
    ensemble = CoOpEnsemble(members)
    test = experiment.test
    with torch.no_grad():
        scores = accuracy_percent(ensemble(image_embeds=test["image_embeds"]).logits, test["labels"])
    pseudo_accuracy = 100.0 * pseudo_label_accuracy(pseudo)
    card_results = experiment.card_results(
        scores["accuracy"],
        f"UPL ensemble of {len(seeds)} prompts (this model)",
        task="Unsupervised image classification",
        description=f"Trained without labels on the {len(pseudo)} most confident zero-shot pseudo-labels (top "
        f"{top_k} per class, pseudo-label accuracy {pseudo_accuracy:.2f} %), evaluated on the full test split.",
        hyperparameters={"pseudo-labels per class": top_k, "seeds": seeds, "epochs": epochs, "loss": run.loss},
    )
    ensemble_dir = Path(args.output_dir) / "ensemble"
    hub_url = None
    if args.should_save:
        ensemble.save_pretrained(ensemble_dir, card_results=card_results)
        if args.push_to_hub:
            repo_id = args.hub_model_id or Path(args.output_dir).name
            hub_url = ensemble.push_to_hub(
                repo_id, token=args.hub_token, private=args.hub_private_repo, card_results=card_results
            )
    record = experiment.results(
        "upl", top_k, seeds, per_seed, epochs=epochs, **prompt, **run.loss_fields(),
        pseudo_label_templates=templates, pseudo_label_models=labellers, pseudo_labels=len(pseudo),
        pseudo_label_accuracy=pseudo_accuracy, pseudo_label_shortfall=shortfall,
        ensemble_dir=str(ensemble_dir),
    )  # fmt: skip
    record["accuracy_members_mean"] = record["accuracy"]
    record.update(accuracy=scores["accuracy"], macro_accuracy=scores["macro_accuracy"])
    record["accuracy_zeroshot"] = experiment.zeroshot["accuracy"]
    if hub_url is not None:
        record["hub_url"] = hub_url
    return record


def zero_shot_probabilities(
    backbone: LoadedBackbone,
    dataset: datasets.Dataset,
    classnames: list[str],
    templates: list[str],
    *,
    batch_size: int,
) -> torch.Tensor:
    """[images, classes] zero-shot CLIP probabilities of one backbone (its own image transform and features)."""
    features = backbone.features(dataset, batch_size=batch_size)
    weights = zero_shot_weights(backbone.clip, backbone.tokenizer, classnames, templates)
    return zero_shot_logits(backbone.clip, weights, features["image_embeds"]).float().softmax(dim=-1)


def pseudo_label_shortfall(pseudo: datasets.Dataset, top_k: int) -> dict[str, int]:
    """{class name: images kept} for every class that kept fewer than `top_k` pseudo-labelled images."""
    names = pseudo.features["label"].names
    counts = Counter(column_values(pseudo, "label"))
    return {name: counts.get(label, 0) for label, name in enumerate(names) if counts.get(label, 0) < top_k}

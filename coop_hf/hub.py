"""Model cards of saved prompts, rendered from the template in `model_cards/` with Hub metadata.

The card receives everything as values: what the model is (`ModelCardInfo`, from the model itself) and what a
training run measured (`CardResults`, from the runner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = "prompt_model_card.md"
TAGS = ["coop-hf", "prompt-learning", "clip", "few-shot", "image-classification", "vision"]


@dataclass
class CardResults:
    """What a training run measured, shown on the model card and in its `model-index` metadata.

    Attributes:
        dataset_name: Human-readable dataset name (e.g. "Flowers102").
        dataset_id: Hub id (or benchmark name) of the dataset, for the card's `datasets` metadata.
        accuracy: Test accuracy of this prompt in percent.
        task_name: What was evaluated, e.g. "16-shot image classification".
        rows: (method, accuracy text) rows of the comparison table, e.g. against zero-shot CLIP.
        description: One sentence on the protocol (shots, seeds, split).
        hyperparameters: Training settings listed on the card.
    """

    dataset_name: str
    dataset_id: str
    accuracy: float
    task_name: str = "Few-shot image classification"
    rows: list[tuple[str, str]] = field(default_factory=list)
    description: str = ""
    hyperparameters: dict[str, object] = field(default_factory=dict)


@dataclass
class ModelCardInfo:
    """What a prompt model says about itself on its card.

    Attributes:
        class_name: The Python class that loads it (e.g. "CoOpModel").
        method_name: The method, e.g. "CoOp".
        paper: (title, URL, BibTeX) of the method's paper.
        base_model: Hub id or path of the base CLIP.
        classnames: The class names in label order.
        prompt_bytes: Size of the saved prompt tensors.
        settings: (setting, value) rows of the prompt table.
        summary: One or two sentences on what the model is.
        extra_citations: BibTeX entries beyond the method's paper.
        tags: Hub tags beyond the common ones.
    """

    class_name: str
    method_name: str
    paper: tuple[str, str, str]
    base_model: str | None
    classnames: list[str]
    prompt_bytes: int
    settings: list[tuple[str, str]] = field(default_factory=list)
    summary: str = ""
    extra_citations: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def format_size(num_bytes: int) -> str:
    return f"{num_bytes / 1024:.1f} KB" if num_bytes < 1024**2 else f"{num_bytes / 1024**2:.1f} MB"


def hub_id(name_or_path: str | None) -> str | None:
    """`name_or_path` when it looks like a Hub id ("org/name" or "name", not a local path), else None. open_clip's
    "hf-hub:org/name" is the Hub id org/name; its "open_clip:<architecture>/<tag>" and "local-dir:" names are none."""
    if name_or_path and name_or_path.startswith("hf-hub:"):
        name_or_path = name_or_path.removeprefix("hf-hub:")
    if (
        not name_or_path
        or name_or_path.startswith((".", "/", "~", "open_clip:", "local-dir:"))
        or "\\" in name_or_path
    ):
        return None
    return name_or_path if name_or_path.count("/") <= 1 else None


def render_model_card(info: ModelCardInfo, results: CardResults | None = None, repo_id: str | None = None) -> str:
    """The README.md of a saved prompt: Hub metadata (with a `model-index` when `results` are given), a usage
    snippet, the prompt's settings, the results and how they were obtained."""
    title, url, bibtex = info.paper
    card_data = ModelCardData(
        library_name="coop-hf",
        pipeline_tag="image-classification",
        tags=[*TAGS, info.method_name.lower(), *info.tags],
        base_model=hub_id(info.base_model),
        license="mit",
    )
    if results is not None:
        card_data.datasets = [results.dataset_id]
        card_data.metrics = ["accuracy"]
        card_data.model_name = repo_id or f"{info.method_name.lower()}-{results.dataset_id.split('/')[-1]}"
        card_data.eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name=results.task_name,
                dataset_type=results.dataset_id,
                dataset_name=results.dataset_name,
                dataset_split="test",
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(results.accuracy, 2),
            )
        ]
    names = info.classnames
    template = files("coop_hf.model_cards").joinpath(TEMPLATE).read_text(encoding="utf-8")
    summary = info.summary or (
        f"A [{info.method_name}]({url}) prompt for **{info.base_model or 'a CLIP model'}** over {len(names)} classes"
        + (f" of **{results.dataset_name}**" if results else "")
        + f" ({title})."
    )
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id or f"{info.method_name} prompt",
        repo_id=repo_id or "<user>/<prompt-repo>",
        class_name=info.class_name,
        method_name=info.method_name,
        summary=summary,
        base_model=info.base_model or "a CLIP model",
        settings=info.settings,
        num_classes=len(names),
        classnames_preview=", ".join(names[:5]) + (", ..." if len(names) > 5 else ""),
        prompt_size=format_size(info.prompt_bytes),
        results=[{"method": m, "accuracy": a} for m, a in results.rows] if results else None,
        results_description=results.description if results else "",
        hyperparameters=results.hyperparameters if results else None,
        citations="\n".join([bibtex, *info.extra_citations]).strip(),
    )
    return str(card)

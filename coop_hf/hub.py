"""Model cards for CoOp prompts, rendered from the template in `model_cards/` with Hub metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from .modeling_coop import CoOpModel
    from .upl import CoOpEnsemble

TEMPLATE = "coop_model_card.md"
TAGS = ["coop", "prompt-learning", "clip", "few-shot", "image-classification", "vision"]


@dataclass
class CardResults:
    """What a training run measured, shown on the model card and in its `model-index` metadata.

    Attributes:
        dataset_name: Human-readable dataset name (e.g. "Flowers102").
        dataset_id: Hub id (or benchmark name) of the dataset, for the card's `datasets` metadata.
        accuracy: Test accuracy of this prompt in percent (mean over seeds).
        rows: (method, accuracy text) rows of the comparison table, e.g. against zero-shot CLIP.
        description: One sentence on the protocol (shots, seeds, split).
        hyperparameters: Training settings listed on the card.
    """

    dataset_name: str
    dataset_id: str
    accuracy: float
    rows: list[tuple[str, str]] = field(default_factory=list)
    description: str = ""
    hyperparameters: dict[str, object] = field(default_factory=dict)


def format_size(num_bytes: int) -> str:
    return f"{num_bytes / 1024:.1f} KB" if num_bytes < 1024**2 else f"{num_bytes / 1024**2:.1f} MB"


def render_model_card(model: CoOpModel | CoOpEnsemble, repo_id: str | None = None) -> str:
    """The README.md of a saved prompt or prompt ensemble: Hub metadata, usage snippet, settings and, if the
    model carries `card_results`, its results."""
    config = model.config
    num_members = getattr(config, "num_members", 1)
    results: CardResults | None = getattr(model, "card_results", None)
    base_model = config.base_model_name_or_path or "a CLIP model"
    card_data = ModelCardData(
        library_name="coop-hf",
        pipeline_tag="image-classification",
        tags=list(TAGS) + (["upl", "ensemble"] if num_members > 1 else []),
        base_model=config.base_model_name_or_path,
        license="mit",
    )
    if results is not None:
        card_data.datasets = [results.dataset_id]
        card_data.metrics = ["accuracy"]
        card_data.model_name = repo_id or f"coop-{results.dataset_id.split('/')[-1]}"
        card_data.eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Few-shot image classification",
                dataset_type=results.dataset_id,
                dataset_name=results.dataset_name,
                dataset_split="test",
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(results.accuracy, 2),
            )
        ]
    num_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.prompt_state_dict().values())
    names = config.classnames
    preview = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    template = files("coop_hf.model_cards").joinpath(TEMPLATE).read_text(encoding="utf-8")
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id or ("CoOp prompt ensemble" if num_members > 1 else "CoOp prompt"),
        repo_id=repo_id or "<user>/<coop-prompt>",
        class_name=type(model).__name__,
        num_members=num_members,
        base_model=base_model,
        n_ctx=config.n_ctx,
        ctx_init=f'"{config.ctx_init}"' if config.ctx_init else "random N(0, 0.02)",
        class_token_position=config.class_token_position,
        class_specific_context=config.class_specific_context,
        num_classes=len(names),
        classnames_preview=preview,
        prompt_size=format_size(num_bytes),
        dataset=results.dataset_name if results else None,
        results=[{"method": m, "accuracy": a} for m, a in results.rows] if results else None,
        results_description=results.description if results else "",
        hyperparameters=results.hyperparameters if results else None,
    )
    return str(card)

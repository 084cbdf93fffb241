"""Configuration of a KgCoOp prompt: CoOp's context plus the weight of its pull towards a hand-crafted prompt."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import check_template
from ...data.templates import BENCHMARK_TEMPLATES, DEFAULT_TEMPLATE
from ..coop.configuration_coop import CoOpConfig

KGCOOP_CTX_INIT = "a photo of a"
"""The phrase the reference always initialises the context from (it ignores the configured one)."""

KGCOOP_TEMPLATES: dict[str, str] = {**BENCHMARK_TEMPLATES, "dtd": "a photo of a {}, a type of texture."}
"""The hand-crafted template per CoOp benchmark (the reference's `CUSTOM_TEMPLATES`): CoOp's, except for DTD."""


@strict
class KgCoOpConfig(CoOpConfig):
    r"""Configuration of a [`KgCoOpModel`]: a CoOp prompt and the knowledge-guided regulariser that keeps its
    class text features close to those of a hand-crafted prompt (Yao et al., CVPR 2023).

    Args:
        n_ctx (`int`, defaults to 4):
            Number of learned context vectors: the BPE token count of `ctx_init` ("a photo of a": 4, as the
            reference forces), or any count with random initialisation.
        ctx_init (`str`, *optional*, defaults to "a photo of a"):
            Phrase whose token embeddings initialise the context (the reference always uses "a photo of a"); an
            empty string starts from N(0, 0.02) vectors instead (then set n_ctx).
        kg_weight (`float`, defaults to 8.0):
            Weight lambda of the knowledge-guided term lambda * (1 - mean over classes of the cosine between the
            learned and the hand-crafted prompt's text features): the reference's W, 8.0 in all its runs.
        template (`str`, *optional*):
            Hand-crafted prompt whose text features the learned ones are pulled towards, with `{}` for the class
            name. None: the dataset's template in KgCoOp's table (CoOp's, but "a photo of a {}, a type of
            texture." for DTD), "a photo of a {}." for other datasets.
        kwargs: The [`CoOpConfig`] settings (class_token_position, class_specific_context, ...).
    """

    model_type = "kgcoop"

    n_ctx: int = 4
    ctx_init: str | None = KGCOOP_CTX_INIT
    kg_weight: float = 8.0
    template: str | None = None

    def __post_init__(self, **kwargs):
        self.template = self.template or DEFAULT_TEMPLATE
        check_template(self.template)
        if isinstance(self.kg_weight, bool) or not isinstance(self.kg_weight, (int, float)) or self.kg_weight < 0:
            raise ValueError(f"kg_weight (--kg_weight) must be a non-negative number, got {self.kg_weight!r}.")
        self.kg_weight = float(self.kg_weight)
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        if self.ctx_init is not None and self.class_specific_context:
            raise ValueError(
                f"KgCoOp initialises one context for all classes from ctx_init={self.ctx_init!r}: for class-specific "
                "context start from random vectors with --ctx_init '' (and set --n_ctx)."
            )
        super().check_prompt_settings()

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The settings whose default depends on the dataset (a CoOp benchmark name): KgCoOp's template."""
        return {"template": KGCOOP_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)}

"""Configuration of a ProGrad prompt: a CoOp context initialised from a template phrase, and the settings of its
gradient projection towards zero-shot CLIP."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict

from ...configuration_utils import check_template
from ...data.templates import DEFAULT_TEMPLATE
from ..coop.configuration_coop import CoOpConfig

PROGRAD_TEMPLATES: dict[str, str] = {
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": DEFAULT_TEMPLATE,
    "food101": "a type of food, a photo of {}.",
    "sun397": DEFAULT_TEMPLATE,
    "caltech101": DEFAULT_TEMPLATE,
    "ucf101": "a photo of a person doing {}.",
    "imagenet": DEFAULT_TEMPLATE,
    "imagenet_v2": DEFAULT_TEMPLATE,
    "imagenet_sketch": DEFAULT_TEMPLATE,
    "imagenet_a": DEFAULT_TEMPLATE,
    "imagenet_r": DEFAULT_TEMPLATE,
}
"""The zero-shot teacher's template per CoOp benchmark (the reference's `CUSTOM_TEMPLATES`, not CoOp's table)."""

TEMPLATE_END = " {}."


def template_phrase(template: str) -> str:
    """The context phrase of a template, as the reference derives it: the text before its final " {}."."""
    if not template.endswith(TEMPLATE_END):
        raise ValueError(
            f"ProGrad initialises the context from the text of template={template!r} (--template) before "
            f"{TEMPLATE_END!r}, but the template does not end with it: pass the phrase as --ctx_init, or "
            "--ctx_init_from_template false for random vectors."
        )
    return template[: -len(TEMPLATE_END)].replace("_", " ")


@strict
class ProGradConfig(CoOpConfig):
    r"""Configuration of a [`ProGradModel`]: a CoOp prompt whose cross-entropy gradient is projected off the
    direction that conflicts with zero-shot CLIP's (Zhu et al., ICCV 2023).

    Args:
        n_ctx (`int`, defaults to 16):
            Number of learned context vectors; at least the word count of the initialisation phrase.
        ctx_init (`str`, *optional*):
            ProGrad's initialisation phrase: its first word-count BPE tokens fill the last context slots and the
            leading slots start as zero vectors, as in the reference. None: the phrase of `template` when
            `ctx_init_from_template`, else N(0, 0.02) vectors; an empty string: N(0, 0.02) vectors.
        ctx_init_from_template (`bool`, defaults to True):
            Without ctx_init, initialise the context from the template's text before " {}." (the reference's
            CTX_INIT True, used by all its configs); False: random N(0, 0.02) vectors. Class-specific context
            always starts from random vectors.
        prograd_lambda (`float`, defaults to 1.0):
            Strength of the projection: a conflicting cross-entropy gradient g loses prograd_lambda times its
            component along the distillation gradient (1.0: the reference's default; its README uses 0.8 for
            8 and 16 shots on Flowers102, DTD and EuroSAT; 0: plain CoOp).
        prograd_temperature (`float`, defaults to 1.0):
            Temperature T of the distillation loss towards zero-shot CLIP (the reference's LOSS.T).
        template (`str`, *optional*):
            Hand-crafted prompt of the zero-shot CLIP teacher, with `{}` for the class name. None: the dataset's
            template in ProGrad's table (e.g. "a type of flower, a photo of a {}."), "a photo of a {}." for other
            datasets.
        kwargs: The [`CoOpConfig`] settings (class_token_position, class_specific_context, ...).
    """

    model_type = "prograd"

    n_ctx: int = 16
    ctx_init_from_template: bool = True
    prograd_lambda: float = 1.0
    prograd_temperature: float = 1.0
    template: str | None = None

    def __post_init__(self, **kwargs):
        self.template = self.template or DEFAULT_TEMPLATE
        check_template(self.template)
        for name in ("prograd_lambda", "prograd_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} (--{name}) must be a non-negative number, got {value!r}.")
            setattr(self, name, float(value))
        if self.prograd_temperature == 0:
            raise ValueError("prograd_temperature (--prograd_temperature) must be positive, got 0.")
        if self.ctx_init == "":  # an empty phrase asks for random vectors, as with CoOp and KgCoOp
            self.ctx_init, self.ctx_init_from_template = None, False
        if self.ctx_init is None and self.ctx_init_from_template and not self.class_specific_context:
            self.ctx_init = template_phrase(self.template)
        super().__post_init__(**kwargs)

    def check_prompt_settings(self) -> None:
        super().check_prompt_settings()
        if self.ctx_init is not None and self.n_ctx < len(self.ctx_init.split(" ")):
            raise ValueError(
                f"n_ctx={self.n_ctx} (--n_ctx) is less than the {len(self.ctx_init.split(' '))} words of the "
                f"initialisation phrase {self.ctx_init!r}: ProGrad writes the phrase into the last context slots. "
                "Raise --n_ctx or shorten the phrase."
            )

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The settings whose default depends on the dataset (a CoOp benchmark name): ProGrad's template."""
        return {"template": PROGRAD_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)}

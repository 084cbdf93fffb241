"""Configuration of a [`CoOpEnsemble`]: CoOp prompts for the same classes whose logits are averaged (UPL)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..coop.configuration_coop import CoOpConfig

# ctx_init is left out: it only initialises the context, so members may differ in it.
SHARED_SETTINGS = (
    "classnames",
    "base_model_name_or_path",
    "backbone_family",
    "n_ctx",
    "class_token_position",
    "class_specific_context",
)
MEMBER_FIELDS = (*SHARED_SETTINGS, "ctx_init")


@strict
class CoOpEnsembleConfig(CoOpConfig):
    r"""Configuration of a [`CoOpEnsemble`]: the settings its members share, plus their number.

    Args:
        num_members (`int`, defaults to 1):
            Number of prompts in the ensemble.
        kwargs: The [`CoOpConfig`] settings of the members.
    """

    model_type = "coop-ensemble"

    num_members: int = 1

    def __post_init__(self, **kwargs):
        if isinstance(self.num_members, bool) or not isinstance(self.num_members, int) or self.num_members < 1:
            raise ValueError(f"num_members must be a positive number of prompts, got {self.num_members!r}.")
        super().__post_init__(**kwargs)

    def member_config(self) -> CoOpConfig:
        """The [`CoOpConfig`] of one member."""
        return CoOpConfig(**{field: getattr(self, field) for field in MEMBER_FIELDS})

"""CLIP-Adapter (Gao et al., IJCV 2023): a residual bottleneck MLP on the frozen image features."""

from ..registry import register_method
from .configuration_clip_adapter import CLIPAdapterConfig
from .modeling_clip_adapter import CLIPAdapterModel
from .recipes import RECIPES

ORDER = 90  # where `--method` and the tables list this folder's methods

register_method("clip-adapter", CLIPAdapterModel, recipes=RECIPES)

__all__ = ["CLIPAdapterConfig", "CLIPAdapterModel"]

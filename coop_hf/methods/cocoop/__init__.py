"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-network, for unseen classes."""

from .configuration_cocoop import CoCoOpConfig
from .modeling_cocoop import CoCoOpModel

__all__ = ["CoCoOpConfig", "CoCoOpModel"]

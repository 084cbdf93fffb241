"""Text-encoder fine-tuning (PTNL's TEnc-FT, Wu et al., ICCV 2023): CLIP's whole text encoder trained on the
hand-crafted prompts, the image encoder frozen."""

from .configuration_tenc_ft import TextEncoderFineTuningConfig
from .modeling_tenc_ft import TextEncoderFineTuningModel

__all__ = ["TextEncoderFineTuningConfig", "TextEncoderFineTuningModel"]

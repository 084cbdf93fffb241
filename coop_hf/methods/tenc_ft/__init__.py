"""Text-encoder fine-tuning (PTNL's TEnc-FT, Wu et al., ICCV 2023): CLIP's whole text encoder trained on the
hand-crafted prompts, the image encoder frozen."""

from ..registry import register_method
from .configuration_tenc_ft import TextEncoderFineTuningConfig
from .modeling_tenc_ft import TextEncoderFineTuningModel

ORDER = 140  # where `--method` and the tables list this folder's methods

register_method("tenc-ft", TextEncoderFineTuningModel, label="TEnc-FT")

__all__ = ["TextEncoderFineTuningConfig", "TextEncoderFineTuningModel"]

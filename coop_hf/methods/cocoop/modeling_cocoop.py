"""CoCoOp: CoOp's context shifted per image by a small meta-network (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022).

The whole computation, top to bottom:
1. CLIP's image features f are L2-normalised; the meta-network (Linear, ReLU, Linear) maps f/||f|| to one vector
   pi(x) that is added to every context vector: image x's prompts are [SOS] (ctx + pi(x)) <class> . [EOS].
2. `CoCoOpModel.get_text_features` encodes those prompts for every image and class through CLIP's own text
   modules; each image's [SOS] + context prefix is encoded once for all of its classes
   (`coop_hf.text_encoding.encode_prefixes`).
3. The logits of image x are the scaled cosine similarities between f/||f|| and its own class text features.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...hub import ModelCardInfo
from ...modeling_utils import PromptModelOutput
from ...text_encoding import encode_plain, encode_prefixes, shared_prefix_length
from ..coop.modeling_coop import COOP_PAPER, CoOpModel
from .configuration_cocoop import CoCoOpConfig

COCOOP_PAPER = (
    "Zhou et al., Conditional Prompt Learning for Vision-Language Models, CVPR 2022",
    "https://arxiv.org/abs/2203.05557",
    """@inproceedings{zhou2022cocoop,
  title     = {Conditional Prompt Learning for Vision-Language Models},
  author    = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}""",
)
META_NET_REDUCTION = 16  # hidden width of the meta-network: the image feature width // 16


def build_meta_net(vision_dim: int, text_width: int) -> nn.Sequential:
    """The reference's meta-network: Linear(vision_dim, vision_dim // 16), ReLU, Linear(-> text_width), with
    biases and PyTorch's default initialisation."""
    hidden = vision_dim // META_NET_REDUCTION
    return nn.Sequential(
        OrderedDict(
            linear1=nn.Linear(vision_dim, hidden),
            relu=nn.ReLU(inplace=True),
            linear2=nn.Linear(hidden, text_width),
        )
    )


class CoCoOpModel(CoOpModel):
    """A frozen contrastive backbone whose class prompts carry a learned context that a meta-network shifts per image.

    Build one with [`CoCoOpModel.from_clip`], load a saved prompt with [`CoCoOpModel.from_pretrained`]. The
    trainable tensors are `prompt_learner.ctx` and the meta-network `meta_net.linear{1,2}.{weight,bias}`; every
    CLIP parameter is frozen and CLIP stays in eval mode. The prompt moves to new classes with `set_classnames`.

    Example:

    ```python
    >>> from coop_hf import CoCoOpModel

    >>> model = CoCoOpModel.from_clip("openai/clip-vit-base-patch32", ["daisy", "rose"])  # ctx "a photo of a"
    >>> logits = model(pixel_values=pixel_values).logits  # [batch, 2]
    >>> model.set_classnames(["tulip", "sunflower", "orchid"])  # the same prompt for unseen classes
    ```
    """

    config: CoCoOpConfig
    config_class = CoCoOpConfig
    method_name = "CoCoOp"
    paper = COCOOP_PAPER

    def __init__(
        self,
        config: CoCoOpConfig,
        clip: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
    ):
        super().__init__(config, clip, tokenizer, image_processor)
        # Built after the context, as in the reference (same random-number order).
        self.meta_net = build_meta_net(self.backbone.embed_dim, self.backbone.text_width)
        self.post_init()

    def context_shift(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """[batch, text width] meta-network output pi(x) for L2-normalised image features [batch, projection_dim];
        image x's context is ctx + pi(x) (the same vector added to every context token)."""
        linear1 = self.meta_net.linear1
        return self.meta_net(image_embeds.to(linear1.weight.dtype))

    def get_text_features(
        self, image_embeds: torch.Tensor, *, chunk_size: int | None = None, checkpoint: bool = False
    ) -> torch.Tensor:
        """[batch, classes, projection_dim] unnormalised text features of every class prompt conditioned on each
        image, from L2-normalised image features `image_embeds` [batch, projection_dim] (what `forward` returns
        as `image_embeds`).

        On a causal text tower each image's [SOS] + context prefix is encoded once for all classes; on a
        bidirectional one (SigLIP) every image's prompts go through the plain path. `chunk_size` (classes per pass)
        and `checkpoint` (recompute activations in backward) only save memory.
        """
        learner = self.prompt_learner
        prompt_embeds = learner(self.backbone.token_embedding)
        shift = self.context_shift(image_embeds).to(prompt_embeds.dtype)
        if not self.backbone.causal_text:
            # [classes, length, 1]: where each class's context sits (rows differ where the tokenizer pads on the left)
            is_context = torch.zeros(*prompt_embeds.shape[:2], 1, dtype=shift.dtype, device=shift.device)
            is_context.scatter_(1, learner.context_positions.unsqueeze(-1), 1)
            prompts = prompt_embeds[None] + shift[:, None, None, :] * is_context
            mask = learner.attention_mask
            features = encode_plain(
                self.backbone,
                prompts.flatten(0, 1),
                learner.eot_positions.repeat(len(shift)),
                chunk_size=chunk_size,
                checkpoint=checkpoint,
                attention_mask=None if mask is None else mask.repeat(len(shift), 1),
            )
            return features.view(len(shift), len(prompt_embeds), -1)
        prefix_length = shared_prefix_length(
            learner.input_ids, learner.context_positions, learner.eot_positions, class_specific=False
        )
        # The context sits right after [SOS] in every prompt, inside the shared prefix.
        is_context = torch.zeros(prefix_length, 1, dtype=prompt_embeds.dtype, device=prompt_embeds.device)
        is_context[learner.context_positions[0]] = 1
        prefixes = prompt_embeds[:1, :prefix_length] + shift[:, None, :] * is_context
        return encode_prefixes(
            self.backbone,
            prefixes,
            prompt_embeds[:, prefix_length:],
            learner.eot_positions,
            chunk_size=chunk_size,
            checkpoint=checkpoint,
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> PromptModelOutput | tuple:
        """Class logits of images: `pixel_values` [batch, 3, H, W], or precomputed CLIP `image_embeds`
        [batch, projection_dim]. With `labels` [batch], also the cross-entropy (mean over the batch).
        `text_embeds` is [batch, classes, projection_dim]: every image has its own class prompts."""
        image_embeds = F.normalize(
            self.image_features(pixel_values, image_embeds, pixel_attention_mask, spatial_shapes), dim=-1
        )
        text_embeds = F.normalize(self.get_text_features(image_embeds), dim=-1)
        scores = torch.einsum("bd,bkd->bk", image_embeds, text_embeds.to(image_embeds.dtype))
        logits = self.backbone.scale_similarities(scores)
        loss_function = functools.partial(self.compute_loss, text_embeds=text_embeds)
        return self.classification_output(
            logits, labels, return_dict, loss_function, image_embeds=image_embeds, text_embeds=text_embeds
        )

    # -- what is saved ---------------------------------------------------------------------------------------------

    def describe_prompt(self) -> str:
        return (
            f"{len(self.config.classnames)} classes, n_ctx={self.config.n_ctx}, text width "
            f"{self.backbone.text_width}, meta-network input {self.backbone.embed_dim}"
        )

    def card_settings(self) -> list[tuple[str, str]]:
        config = self.config
        linear1, linear2 = self.meta_net.linear1, self.meta_net.linear2
        return [
            ("context vectors (`n_ctx`)", str(config.n_ctx)),
            ("initialisation (`ctx_init`)", f'"{config.ctx_init}"' if config.ctx_init else "random N(0, 0.02)"),
            (
                "meta-network",
                f"Linear({linear1.in_features}, {linear1.out_features}), ReLU, "
                f"Linear({linear2.in_features}, {linear2.out_features}) on the L2-normalised image feature",
            ),
        ]

    def card_info(self) -> ModelCardInfo:
        info = super().card_info()
        info.extra_citations = [COOP_PAPER[2]]
        return info

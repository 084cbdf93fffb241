"""Time one training step of a deep-prompt method (MaPLe, IVLP, PromptSRC): the straightforward computation against
coop_hf's, on the ViT-B/32 architecture with random weights.

Modes, each a full step (forward, backward, SGD with momentum and weight decay over every learned tensor) on a batch:
  straightforward  the official computation: every class prompt at CLIP's full 77 tokens through the text tower,
                   the deeper language prompts written into positions 1..n_ctx before each prompted layer; the
                   image tower with its vision prompts (PromptSRC: plus its regularisers, with the frozen image
                   tower's forward pass)
  ours             coop_hf's model: prompts cut after the longest end-of-text token, the [SOS] + prompts +
                   fixed words prefix (the same for every class at every layer) encoded once; the same image tower
Before timing, the two first steps (same tensors, same inputs) are compared: loss and every gradient.

Example: python benchmarks/bench_deep_prompts.py --method promptsrc --classes 102 --batch_size 4 --repeats 5
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_step import (  # noqa: E402
    CLIP_CONFIGS,
    build_clip,
    classnames,
    sgd,
    straightforward_against_ours,
)
from transformers import AutoTokenizer  # noqa: E402

from coop_hf import IVLPModel, MaPLeModel, PromptModelOutput, PromptSRCModel  # noqa: E402
from coop_hf.backbones import Backbone  # noqa: E402
from coop_hf.methods.deep_prompts import DeepPromptModel  # noqa: E402

MODES = ("straightforward", "ours")
MODELS = {"maple": MaPLeModel, "ivlp": IVLPModel, "promptsrc": PromptSRCModel}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(MODELS), default="maple")
    parser.add_argument("--classes", type=int, default=102)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--prompt_depth", type=int, default=9, help="every prompt depth of the method")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per mode (after a warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def straightforward_text_features(model: DeepPromptModel) -> torch.Tensor:
    """The official TextEncoder: all prompts at the full context length, each prompted layer's language prompts
    written into positions 1..n_ctx before it."""
    backbone: Backbone = model.backbone
    learner, n_ctx = model.prompt_learner, model.config.n_ctx
    full_length = backbone.max_text_length
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    input_ids = F.pad(learner.input_ids, (0, full_length - learner.input_ids.shape[1]), value=pad_id)
    embeds = backbone.token_embedding(input_ids)
    prompts = torch.cat([embeds[:, :1], learner.ctx.expand(len(embeds), -1, -1), embeds[:, 1 + n_ctx :]], dim=1)
    hidden = backbone.text_embeddings(inputs_embeds=prompts)
    mask = backbone.text_attention_mask(hidden)
    deeper = model.deep_text_prompts()
    for index, layer in enumerate(backbone.text_layers):
        if 1 <= index <= len(deeper):
            context = deeper[index - 1].expand(len(hidden), -1, -1)
            hidden = torch.cat([hidden[:, :1], context, hidden[:, 1 + n_ctx :]], dim=1)
        hidden = layer(hidden, mask, is_causal=True)
    return backbone.project_text(hidden[torch.arange(len(hidden)), learner.eot_positions])


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    config_dir = CLIP_CONFIGS[0]
    clip = build_clip(config_dir, device)
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    torch.manual_seed(0)
    model_class = MODELS[args.method]
    depths = {name: args.prompt_depth for name in ("prompt_depth", "prompt_depth_text", "prompt_depth_vision")}
    depths = {name: value for name, value in depths.items() if name in model_class.config_class.prompt_settings()}
    model = model_class.from_clip(clip, classnames(args.classes), tokenizer=tokenizer, **depths)
    model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    size = clip.config.vision_config.image_size
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    if isinstance(model, PromptSRCModel):  # the frozen text features: computed once per class list, not per step
        start = time.perf_counter()
        model.frozen_text_embeds()
        print(f"PromptSRC's frozen text features ({args.classes} classes x 60 templates): "
              f"{time.perf_counter() - start:.1f} s, once")  # fmt: skip

    def straightforward_loss() -> torch.Tensor:
        image = F.normalize(model.image_features(pixel_values, None), dim=-1)
        text = F.normalize(straightforward_text_features(model), dim=-1)
        logits = model.backbone.logits(image, text)
        if isinstance(model, PromptSRCModel):
            output = PromptModelOutput(logits=logits, image_embeds=image, text_embeds=text)
            return sum(model.loss_terms(pixel_values, labels, output).values())
        return F.cross_entropy(logits, labels)

    losses = {
        "straightforward": straightforward_loss,
        "ours": lambda: model(pixel_values=pixel_values, labels=labels).loss,
    }
    optimizers = {mode: sgd(parameters) for mode in MODES}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ViT-B/32 architecture, "
          f"{model.method_name} depth {args.prompt_depth}, n_ctx {model.config.n_ctx}, {args.classes} classes, "
          f"batch {args.batch_size}, fp32 {device}; prompts {model.prompt_learner.input_ids.shape[1]} tokens "
          "(straightforward: 77)")  # fmt: skip
    straightforward_against_ours(losses, optimizers, parameters, device, args.repeats)


if __name__ == "__main__":
    main()

"""open_clip checkpoints as backbones (`coop_hf.backbones.openclip`): RN50 and ViT-B-32 models built by open_clip with
random weights (seeded; widths and layers shrunk), saved in open_clip's folder format (`open_clip_config.json` +
`open_clip_model.safetensors`) and loaded back by open_clip itself as the reference. Needs open_clip (and
torchvision): skipped without them."""

import json
import operator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tolerances import assert_close_fp32, stages
from transformers import AutoModel, AutoTokenizer, pipeline

from coop_hf import (
    CLIPLoRAModel,
    CoCoOpModel,
    CoOpModel,
    IVLPModel,
    KgCoOpModel,
    MaPLeModel,
    PromptSRCModel,
)
from coop_hf.backbones import OpenCLIPModel, backbone_for, load_backbone
from coop_hf.backbones.frozen_resnet import FoldedConvolution, PooledTokenAttention, trace_frozen_resnet
from coop_hf.backbones.openclip import SplitMultiheadAttention, open_clip_tokenizer
from coop_hf.runners import LoadedBackbone
from coop_hf.text_encoding import encode_plain
from tests.conftest import DATA, VIT_B32

open_clip = pytest.importorskip("open_clip")

CLASSNAMES = ["daisy", "sea lion", "rose", "tulip"]
PHRASE = "a photo of a"
IMAGE_SIZE = 64
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not OpenAI's: the processor must read them from the checkpoint
TEXT = dict(width=64, heads=4, layers=2)
VISION = {
    "RN50": dict(layers=[1, 1, 1, 1], width=16, image_size=IMAGE_SIZE),
    "ViT-B-32": dict(layers=2, width=64, patch_size=16, image_size=IMAGE_SIZE),
}
ARCHITECTURES = tuple(VISION)


def tiny_config(name: str) -> dict:
    """open_clip's own model config of `name`, shrunk."""
    config = open_clip.get_model_config(name)
    config["text_cfg"].update(TEXT)
    config["vision_cfg"].update(VISION[name])
    config["embed_dim"] = 32
    return config


def save_open_clip_checkpoint(name: str, folder, seed: int = 0):
    """A random open_clip model of `name` (seeded), saved as open_clip's `local-dir:` / `hf-hub:` format."""
    config = tiny_config(name)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # ~100, the trained models' scale
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"size": IMAGE_SIZE, "mean": MEAN, "std": STD, "interpolation": "bicubic"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    save_file(
        {key: value.contiguous() for key, value in model.state_dict().items()}, folder / "open_clip_model.safetensors"
    )
    return folder


@pytest.fixture(scope="module", params=ARCHITECTURES)
def checkpoint(request, tmp_path_factory):
    """(architecture, folder, open_clip's own model loaded from the folder by open_clip)."""
    name = request.param
    folder = save_open_clip_checkpoint(name, tmp_path_factory.mktemp("open_clip") / name)
    reference = open_clip.create_model(f"local-dir:{folder}").eval()
    return name, folder, reference


def pixels(count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def open_clip_zero_shot(reference, tokenizer, images, texts) -> torch.Tensor:
    """open_clip's own zero-shot logits: encode_image, encode_text on its tokenizer's ids, logit_scale."""
    image = reference.encode_image(images, normalize=True)
    text = reference.encode_text(tokenizer(texts), normalize=True)
    return reference.logit_scale.exp() * image @ text.t()


# -- loading ----------------------------------------------------------------------------------------------------


def test_a_folder_and_local_dir_load_as_the_open_clip_family(checkpoint):
    name, folder, reference = checkpoint
    for source in (str(folder), f"local-dir:{folder}"):
        model, tokenizer = load_backbone(source)
        assert isinstance(model, OpenCLIPModel) and model.name_or_path == source
        backbone = backbone_for(model)
        assert backbone.family == "open_clip" and backbone.causal_text
        assert backbone.display_name == f"OpenCLIP {name} ({'ResNet' if name == 'RN50' else 'ViT'} image tower)"
        assert backbone.max_text_length == 77 and backbone.text_width == 64 and backbone.embed_dim == 32
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[_our_key(key, model)], value), key


def _our_key(key: str, model: OpenCLIPModel) -> str:
    """Where open_clip's state-dict key sits in `OpenCLIPModel` (its modules, re-laid out)."""
    renames = {
        "token_embedding.": "text_model.embeddings.token_embedding.",
        "positional_embedding": "text_model.embeddings.positional_embedding",
        "ln_final.": "text_model.final_layer_norm.",
        "text_projection": "text_model.projection_matrix",
        "visual.": "vision_model.",
    }
    if key.startswith("transformer.resblocks."):
        index, rest = key[len("transformer.resblocks.") :].split(".", 1)
        return f"text_model.layers.{index}.block.{rest}"
    for old, new in renames.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def test_the_model_saves_and_reloads_through_auto_model(checkpoint, tmp_path):
    _, folder, _ = checkpoint
    model, _ = load_backbone(str(folder))
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path)
    assert isinstance(again, OpenCLIPModel)
    images = pixels(2)
    with torch.no_grad():
        torch.testing.assert_close(again.get_image_features(images), model.get_image_features(images))


def test_the_tokenizer_is_open_clips_bpe():
    """Bundled with open_clip (offline): the ids of `open_clip.tokenize` up to each [EOS], and the vocabulary and
    ids of the real CLIP tokenizer."""
    tokenizer = open_clip_tokenizer()
    texts = ["a photo of a sea lion.", "A Photo of  TWO daisies, 3 roses & café!", "itap of a {}", "x"]
    ids = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    expected = open_clip.tokenize(texts)
    for row, reference in zip(ids, expected, strict=True):
        end = int((reference == tokenizer.eos_token_id).nonzero()[0]) + 1
        assert row[:end].tolist() == reference[:end].tolist()
    real = AutoTokenizer.from_pretrained(VIT_B32)
    assert tokenizer.get_vocab() == real.get_vocab()
    assert tokenizer(texts)["input_ids"] == real(texts)["input_ids"]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.padding_side) == (49407, 49407, "right")


def test_the_image_processor_has_the_checkpoints_preprocessing(checkpoint):
    _, folder, _ = checkpoint
    processor = LoadedBackbone.load(str(folder)).image_processor
    assert processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert processor.size == {"shortest_edge": IMAGE_SIZE}
    assert tuple(processor.image_mean) == MEAN and tuple(processor.image_std) == STD
    assert CoOpModel.from_clip(str(folder), CLASSNAMES, n_ctx=2).image_processor.to_dict() == processor.to_dict()


def test_an_open_clip_name_needs_its_pretrained_tag():
    with pytest.raises(ValueError, match="open_clip:<architecture>/<pretrained tag>, e.g. open_clip:RN50/openai"):
        load_backbone("open_clip:RN50")
    with pytest.raises(ValueError, match="no architecture 'RN51'"):
        load_backbone("open_clip:RN51/openai")


@pytest.mark.parametrize(
    "name, tag, quick_gelu",
    [("RN50", "openai", True), ("ViT-B-32", "openai", True), ("ViT-B-32", "laion2b_e16", False)],
)
def test_an_open_clip_name_is_built_with_the_activation_its_weights_were_trained_with(
    monkeypatch, name, tag, quick_gelu
):
    """open_clip builds `RN50` with nn.GELU whatever the tag, and only warns where OpenAI's weights need QuickGELU
    (text features off by 5e-2): coop-hf asks for QuickGELU where the tag's pretrained config says so."""
    assert bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu")) is quick_gelu  # open_clip's own record
    built = {}

    def create_model(name, pretrained=None, **kwargs):  # the download stands aside; the architecture is built
        built.update(name=name, pretrained=pretrained, **kwargs)
        config = tiny_config(name) | {"quick_gelu": kwargs["force_quick_gelu"]}
        return open_clip.CLIP(**config)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    model, _ = load_backbone(f"open_clip:{name}/{tag}")
    assert built["force_quick_gelu"] is quick_gelu and built["pretrained"] == tag
    activations = {type(module) for module in model.text_model.modules()} & {
        open_clip.transformer.QuickGELU,
        torch.nn.GELU,
    }
    assert activations == {open_clip.transformer.QuickGELU if quick_gelu else torch.nn.GELU}


def test_an_uncached_hub_checkpoint_offline_says_so():
    with pytest.raises(OSError, match=r"coop-hf-tests/never-cached is not in the Hugging Face cache, and the Hub"):
        load_backbone("hf-hub:coop-hf-tests/never-cached")


def test_a_text_tower_without_clips_layout_is_refused():
    config = tiny_config("ViT-B-32")
    config["text_cfg"].update(no_causal_mask=True, pool_type="last")
    config["custom_text"] = True
    model = open_clip.CustomTextCLIP(**{key: value for key, value in config.items() if key != "custom_text"})
    with pytest.raises(ValueError, match="cannot be a coop-hf backbone: its text tower is bidirectional"):
        OpenCLIPModel.from_open_clip_model(model, config)


# -- exactness --------------------------------------------------------------------------------------------------


def test_untrained_coop_is_open_clips_zero_shot(checkpoint):
    """ "a photo of a" CoOp, loaded from the folder, equals open_clip's own zero-shot classifier on its own model
    and tokenizer (the shared-prefix fast path through the open_clip blocks)."""
    _, folder, reference = checkpoint
    coop = CoOpModel.from_clip(str(folder), CLASSNAMES, ctx_init=PHRASE)
    images = pixels()
    with torch.no_grad():
        expected = open_clip_zero_shot(
            reference, open_clip.get_tokenizer(f"local-dir:{folder}"), images, [f"{PHRASE} {n}." for n in CLASSNAMES]
        )
        logits = coop(pixel_values=images).logits
    assert relative_error(logits, expected) < 1e-5


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_untrained_coop_is_open_clips_zero_shot_on_the_full_architecture(name):
    """The same on open_clip's full-size RN50 / ViT-B-32 (random weights, `pretrained=None`), 102 classes."""
    torch.manual_seed(0)
    reference = open_clip.create_model(name, pretrained=None).eval()
    model = OpenCLIPModel.from_open_clip_model(reference, open_clip.get_model_config(name), source=f"open_clip:{name}")
    classnames = [f"flower number {index}" for index in range(102)]
    coop = CoOpModel.from_clip(model, classnames, tokenizer=open_clip_tokenizer(model), ctx_init=PHRASE)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = open_clip_zero_shot(reference, open_clip.tokenize, images, [f"{PHRASE} {n}." for n in classnames])
        logits = coop(pixel_values=images).logits
    assert relative_error(logits, expected) < 1e-5


def reference_text_features(reference, prompt_embeds: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """open_clip's encode_text from token embeddings: every position through open_clip's transformer, its causal
    mask, ln_final, the [EOS] token, the text projection."""
    length = prompt_embeds.shape[1]
    hidden = prompt_embeds + reference.positional_embedding[:length]
    hidden = reference.transformer(hidden, attn_mask=reference.attn_mask[:length, :length])
    pooled = reference.ln_final(hidden)[torch.arange(len(hidden)), eot]
    return pooled @ reference.text_projection


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_logits_and_context_gradient_match_open_clips_modules(checkpoint, position):
    _, folder, reference = checkpoint
    classnames = CLASSNAMES if position == "end" else ["daisy", "rose", "tulip"]  # one-token names move
    torch.manual_seed(0)
    coop = CoOpModel.from_clip(str(folder), classnames, n_ctx=4, class_token_position=position)
    labels = torch.tensor([0, 2, 1])
    images = pixels()
    coop(pixel_values=images, labels=labels).loss.backward()

    ctx = coop.prompt_learner.ctx.detach().clone().requires_grad_(True)
    ids = open_clip.tokenize([f"X X X X {name}." for name in classnames])
    eot = ids.argmax(-1)
    embeds = reference.token_embedding(ids)
    rows = []
    for row in range(len(ids)):  # the context over the placeholders, the class moved by hand
        words = embeds[row, 5 : int(eot[row]) - 1]  # the class name's tokens (the period stays before [EOS])
        if position == "end":
            middle = [ctx, words]
        elif position == "front":
            middle = [words, ctx]
        else:
            middle = [ctx[:2], words, ctx[2:]]
        rows.append(torch.cat([embeds[row, :1], *middle, embeds[row, int(eot[row]) - 1 :]]))
    text = reference_text_features(reference, torch.stack(rows), eot)
    with torch.no_grad():
        image = F.normalize(reference.encode_image(images), dim=-1)
    logits = reference.logit_scale.exp() * image @ F.normalize(text, dim=-1).t()
    F.cross_entropy(logits, labels).backward()
    with torch.no_grad():
        assert_close_fp32(coop(pixel_values=images).logits, logits, depth=stages(2))
    assert_close_fp32(coop.prompt_learner.ctx.grad, ctx.grad, depth=stages(2, backward=True))


def test_the_fast_path_equals_the_plain_path(checkpoint):
    _, folder, _ = checkpoint
    torch.manual_seed(0)
    coop = CoOpModel.from_clip(str(folder), CLASSNAMES, n_ctx=4)
    learner = coop.prompt_learner
    with torch.no_grad():
        plain = encode_plain(coop.backbone, learner(coop.backbone.token_embedding), learner.eot_positions)
        assert_close_fp32(coop.get_text_features(), plain, depth=stages(2))


# -- capabilities -----------------------------------------------------------------------------------------------


DEPTHS = {
    MaPLeModel: {"prompt_depth": 2},
    IVLPModel: {"prompt_depth_text": 2, "prompt_depth_vision": 2},
    PromptSRCModel: {"prompt_depth_text": 2, "prompt_depth_vision": 2},
}


@pytest.mark.parametrize("method", list(DEPTHS))
def test_deep_vision_prompts_run_on_a_vit_tower_and_are_refused_on_a_resnet(checkpoint, method):
    name, folder, _ = checkpoint
    if name != "RN50":
        model = method.from_clip(str(folder), CLASSNAMES, **DEPTHS[method])
        model.train()
        model(pixel_values=pixels(2), labels=torch.tensor([0, 3])).loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        return
    with pytest.raises(ValueError, match=r"OpenCLIP RN50 \(ResNet image tower\) has no such layout.*--method coop"):
        method.from_clip(str(folder), CLASSNAMES, **DEPTHS[method])


def test_a_frozen_resnet_tower_runs_channels_last_rewritten_for_inference(checkpoint):
    name, folder, _ = checkpoint
    reference = open_clip.create_model(f"local-dir:{folder}").eval()  # changed below: not the shared one
    model, _ = load_backbone(str(folder))
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(3)
    norms = [module for module in model.vision_model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    reference_norms = [module for module in reference.visual.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    for ours, theirs in zip(norms, reference_norms, strict=True):  # statistics far from the initial 0 and 1
        for tensor in ("running_mean", "running_var", "weight", "bias"):
            value = torch.rand(getattr(ours, tensor).shape, generator=generator) + 0.5
            getattr(ours, tensor).data.copy_(value)
            getattr(theirs, tensor).data.copy_(value)
    images = pixels(2)

    def features_match() -> None:
        with torch.no_grad():
            assert relative_error(model.get_image_features(images), reference.encode_image(images)) < 1e-5

    features_match()
    if name != "RN50":  # a ViT's patch embedding gains nothing from either
        assert not hasattr(model, "_frozen")
        return
    traced = model._frozen[1]
    convolutions = [module for module in traced.modules() if isinstance(module, FoldedConvolution)]
    assert len(convolutions) == len(norms)  # every BatchNorm of open_clip's ResNet follows a convolution
    in_place_sums = [node for node in traced.graph.nodes if node.target == "add_"]
    tower = model.vision_model
    assert len(in_place_sums) == sum(len(layer) for layer in (tower.layer1, tower.layer2, tower.layer3, tower.layer4))
    assert isinstance(traced.attnpool, PooledTokenAttention) and traced.attnpool.pool is model.vision_model.attnpool
    layouts = []
    convolutions[0].register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    features_match()
    assert layouts == [True]
    assert all(weight.is_contiguous() for weight in model.vision_model.parameters())  # open_clip's layout kept
    # Weights loaded in place: the same traced tower reads them at the next call.
    for module in (model.vision_model, reference.visual):
        module.layer1[0].bn1.running_var.mul_(3)
        module.attnpool.k_proj.weight.data.mul_(-2)
    features_match()
    assert model._frozen[1] is traced
    # A tensor replaced: traced again.
    for module in (model.vision_model, reference.visual):
        module.conv1.weight = torch.nn.Parameter(module.conv1.weight * 2, requires_grad=False)
    features_match()
    assert model._frozen[1] is not traced
    # Trained, or in train mode, the tower runs as open_clip's (batch statistics, gradients to the BatchNorms).
    model.vision_model.train()
    reference.visual.train()
    try:
        features_match()
    finally:
        reference.visual.eval()
    model.vision_model.eval().requires_grad_(True)
    model.get_image_features(images).sum().backward()
    assert norms[0].weight.grad is not None


class ResidualSums(torch.nn.Module):
    """conv-BN + input, and input + conv-BN: only the first sum may write into the convolution's output."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
        self.first_norm, self.second_norm = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
        self.identity = torch.nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.first_norm(self.first(images)) + images
        return self.identity(hidden) + self.second_norm(self.second(hidden))


def test_trace_frozen_resnet_folds_each_batch_norm_into_its_convolution_and_sums_in_place_only_into_its_output():
    torch.manual_seed(0)
    for bias, affine in ((False, True), (True, False)):
        convolution = torch.nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        norm = torch.nn.BatchNorm2d(6, affine=affine)
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2)
        if affine:
            norm.weight.data.normal_()
            norm.bias.data.normal_()
        tower = torch.nn.Sequential(convolution, norm, torch.nn.ReLU(), torch.nn.Conv2d(6, 2, 1)).eval()
        traced = trace_frozen_resnet(tower)
        called = [node.target for node in traced.graph.nodes if node.op == "call_module"]
        assert called == ["0", "2", "3"] and isinstance(traced.get_submodule("0"), FoldedConvolution)
        images = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(traced(images), tower(images))
        assert tower[0] is convolution and tower[1] is norm  # the tower itself is untouched
    sums = ResidualSums().eval()
    traced = trace_frozen_resnet(sums)
    assert [node.target for node in traced.graph.nodes if node.op in ("call_function", "call_method")] == [
        "add_",
        operator.add,
    ]
    images = torch.randn(2, 3, 4, 4)
    kept = images.clone()
    torch.testing.assert_close(traced(images), sums(images))
    assert torch.equal(images, kept)


def test_a_resnet_without_its_attention_pool_is_traced_without_it():
    tower = open_clip.CLIP(**tiny_config("RN50")).visual.eval()
    tower.attnpool = torch.nn.Identity()  # dense features, as some users take them
    traced = trace_frozen_resnet(tower)
    assert isinstance(traced.attnpool, torch.nn.Identity)
    with torch.no_grad():
        assert relative_error(traced(pixels(1)), tower(pixels(1))) < 1e-5


def test_pooled_token_attention_is_open_clips_attention_pool():
    from open_clip.modified_resnet import AttentionPool2d

    torch.manual_seed(0)
    for width, heads, output in ((64, 4, 24), (32, 1, 32)):
        pool = AttentionPool2d(spacial_dim=3, embed_dim=width, num_heads=heads, output_dim=output).eval()
        for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            linear.bias.data.normal_()  # biases far from open_clip's initial zeros
        hidden = torch.randn(5, width, 3, 3) * 3
        with torch.no_grad():
            assert relative_error(PooledTokenAttention(pool)(hidden), pool(hidden)) < 1e-6


def test_vision_layer_hooks_on_a_vit_tower_and_none_on_a_resnet(checkpoint):
    name, folder, _ = checkpoint
    model, _ = load_backbone(str(folder))
    backbone, images = backbone_for(model), pixels(2)
    if name == "RN50":
        assert len(backbone.vision_layers) == 0 and not backbone.vision_pools_class_token
        with pytest.raises(ValueError, match="OpenCLIP RN50 .* has no per-layer vision hooks"):
            backbone.image_features(images, layer_hook=lambda index, hidden: hidden)
        return
    seen = []
    with torch.no_grad():
        plain = backbone.image_features(images)
        hooked = backbone.image_features(images, layer_hook=lambda index, hidden: seen.append(index) or hidden)
        torch.testing.assert_close(hooked, plain)
        assert seen == [0, 1]
        changed = backbone.image_features(images, layer_hook=lambda index, hidden: hidden * (1 + (index == 1)))
        appended = backbone.image_features(
            images, embeddings_hook=lambda tokens: torch.cat([tokens, tokens[:, :2]], 1)
        )
    assert not torch.allclose(changed, plain) and not torch.allclose(appended, plain)
    torch.testing.assert_close(backbone.image_features(images), plain)  # the hooks are gone


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_attention_is_the_packed_attention(batch_first):
    """The same output as `nn.MultiheadAttention` with no mask, an additive one, a boolean one and a per-head one."""
    torch.manual_seed(0)
    packed = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    split = SplitMultiheadAttention(packed)
    states = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    masks = [None, causal, causal.isinf(), causal.isinf().expand(3 * 4, 5, 5)]
    with torch.no_grad():
        for mask in masks:
            expected = packed(states, states, states, need_weights=False, attn_mask=mask)[0]
            assert_close_fp32(split(states, states, states, attn_mask=mask)[0], expected, depth=2)
    with pytest.raises(ValueError, match="attention mask only"):
        split(states, states, states, key_padding_mask=torch.zeros(3, 5, dtype=torch.bool))


LORA_TARGET = {
    "q": (0, "in_proj_weight"),
    "k": (1, "in_proj_weight"),
    "v": (2, "in_proj_weight"),
    "o": (0, "out_proj.weight"),
}


def merged_lora_weights(reference, model: CLIPLoRAModel) -> dict[str, torch.Tensor]:
    """The official CLIP-LoRA's weights in open_clip's own (packed) parameters: W + alpha / sqrt(r) B A for every
    updated projection of every updated block, as its `LinearLoRA` merges them (differentiable in A and B)."""
    scaling = model.config.lora_alpha / model.config.lora_rank**0.5
    updates: dict[str, list] = {}
    for name, module in model.clip.named_modules():
        if not hasattr(module, "lora_A"):
            continue
        index, tower = int(name.split(".")[-4 if ".block." in name else -3]), name.split(".")[0]
        param = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o"}[name.split(".")[-1]]
        blocks = "transformer.resblocks" if tower == "text_model" else "visual.transformer.resblocks"
        row, weight = LORA_TARGET[param]
        delta = scaling * module.lora_B["default"].weight @ module.lora_A["default"].weight
        updates.setdefault(f"{blocks}.{index}.attn.{weight}", []).append((row, delta))
    merged = {}
    for key, deltas in updates.items():
        weight = dict(reference.named_parameters())[key]
        width = weight.shape[1]
        rows = list(weight.split(width))
        for row, delta in deltas:
            rows[row] = rows[row] + delta
        merged[key] = torch.cat(rows)
    return merged


@pytest.mark.parametrize("encoder", ["text", "both"])
def test_clip_lora_logits_and_every_lora_gradient_match_the_official_computation(checkpoint, encoder):
    """CLIP-LoRA on open_clip's blocks (their packed attention split into linear q, k, v and out projections, as the
    official code splits OpenAI's) against the official computation on open_clip's own model: every updated
    projection's weight merged with alpha / sqrt(r) B A (q, k, v and o, B random), the logits and the gradient of
    every LoRA matrix. A ResNet image tower has no transformer layers: vision updates are refused in one line."""
    name, folder, reference = checkpoint
    settings = {"lora_encoder": encoder, "lora_params": ["q", "k", "v", "o"], "lora_position": "all"}
    if name == "RN50" and encoder == "both":
        with pytest.raises(ValueError, match=r"which the image tower of OpenCLIP RN50 .* use --lora_encoder text"):
            CLIPLoRAModel.from_clip(str(folder), CLASSNAMES, **settings)
        return
    model = CLIPLoRAModel.from_clip(str(folder), CLASSNAMES, **settings).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    images, labels = pixels(), torch.tensor([0, 3, 1])
    output = model(pixel_values=images, labels=labels)
    output.loss.backward()

    merged = merged_lora_weights(reference, model)
    layers = {"text": 2, "both": 4}[encoder]
    assert len(merged) == 2 * layers  # in_proj_weight and out_proj.weight of every block
    texts = open_clip.get_tokenizer(f"local-dir:{folder}")([model.config.template.format(n) for n in CLASSNAMES])
    image, text, scale = torch.func.functional_call(reference, merged, (images, texts))
    expected = scale * image @ text.t()
    assert_close_fp32(output.logits.detach(), expected.detach(), depth=stages(2))
    lora = {key: value for key, value in model.named_parameters() if "lora_" in key}
    grads = torch.autograd.grad(F.cross_entropy(expected, labels), list(lora.values()))
    for (key, parameter), grad in zip(lora.items(), grads, strict=True):
        assert_close_fp32(parameter.grad, grad, depth=stages(2, backward=True), msg=key)


def test_clip_lora_leaves_the_shared_backbone_packed_and_saves_only_its_matrices(checkpoint, tmp_path):
    """The split happens in the model's own copy: the backbone others share keeps open_clip's packed attention, and
    the saved model reloads to the same logits."""
    name, folder, _ = checkpoint
    clip, tokenizer = load_backbone(str(folder))
    encoder = "text" if name == "RN50" else "both"
    model = CLIPLoRAModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, lora_encoder=encoder).eval()
    assert all(isinstance(layer.block.attn, torch.nn.MultiheadAttention) for layer in clip.text_model.layers)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.normal_(std=0.05)
        logits = model(pixel_values=pixels()).logits
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            CLIPLoRAModel.from_pretrained(tmp_path).eval()(pixel_values=pixels()).logits, logits
        )


@pytest.mark.parametrize("method", [CoCoOpModel, KgCoOpModel])
def test_coop_successors_train_on_open_clip(checkpoint, method):
    _, folder, _ = checkpoint
    model = method.from_clip(str(folder), CLASSNAMES)  # the method's default context
    model.train()
    loss = model(pixel_values=pixels(2), labels=torch.tensor([0, 3])).loss
    loss.backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0


# -- end to end -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["zeroshot", "linear-probe", "tip-adapter", "tip-adapter-f", "clip-adapter", "lp++", "coop", "clip-lora"]
)
def test_every_feature_cache_method_and_coop_run_from_the_command_line(checkpoint, tmp_path, method):
    from PIL import Image

    from tests.test_train_e2e import run_in_process

    _, folder, _ = checkpoint
    arguments = [
        "--model_name_or_path", f"local-dir:{folder}", "--dataset", "oxford_flowers", "--data_dir", str(DATA),
        "--shots", "1", "--num_train_epochs", "1", "--output_dir", str(tmp_path), "--disable_tqdm", "true",
        "--method", method, *(["--n_ctx", "2", "--learning_rate", "0.05"] if method == "coop" else []),
        *(["--lora_encoder", "text", "--max_steps", "2"] if method == "clip-lora" else []),
    ]  # fmt: skip
    results = run_in_process(arguments)
    assert 0 <= results["accuracy"] <= 100
    assert results["backbone_family"] == "open_clip"
    if method == "coop":  # the saved prompt is all a pipeline needs (the open_clip base reloaded by its name)
        classifier = pipeline("image-classification", model=str(tmp_path / "seed1"))
        image = Image.open(sorted((DATA / "oxford_flowers" / "jpg").glob("*.jpg"))[0]).convert("RGB")
        assert len(classifier(image, top_k=2)) == 2


# -- the official CoOp ------------------------------------------------------------------------------------------


def official_config() -> dict:
    """The tiny RN50 of the fixture: OpenAI's model code reads the heads as width // 64 and always uses QuickGELU."""
    config = open_clip.get_model_config("RN50")
    config["text_cfg"].update(width=128, heads=2, layers=2)
    config["vision_cfg"].update(layers=[1, 1, 1, 1], width=16, image_size=IMAGE_SIZE)
    config["embed_dim"] = 32
    config["quick_gelu"] = True
    return config


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_equals_the_official_coop_on_openai_clip_code(position):
    """tests/fixtures/open_clip_official_coop.json holds the logits and context gradients of KaiyangZhou/CoOp's
    PromptLearner + TextEncoder on openai/CLIP's model code (fp32), run outside this repository by
    tests/fixtures/make_open_clip_official_coop.py on the same seeded random weights converted to OpenAI's layout."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "open_clip_official_coop.json").read_text())
    torch.manual_seed(0)
    reference = open_clip.CLIP(**official_config()).eval()
    with torch.no_grad():
        reference.logit_scale.fill_(4.6052)
    checksum = sum(float(value.double().sum()) for value in reference.state_dict().values())
    assert checksum == pytest.approx(fixture["weights_checksum"], rel=1e-12), "torch drew other random weights"
    case = fixture["cases"][position]
    model = OpenCLIPModel.from_open_clip_model(reference, official_config())
    coop = CoOpModel.from_clip(
        model, case["classnames"], tokenizer=open_clip_tokenizer(model), n_ctx=4, class_token_position=position
    )
    with torch.no_grad():
        coop.prompt_learner.ctx.copy_(torch.tensor(case["ctx"]))
    images = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    output = coop(pixel_values=images, labels=torch.tensor(fixture["labels"]))
    output.loss.backward()
    assert_close_fp32(output.logits.detach(), torch.tensor(case["logits"]), depth=stages(2))
    assert_close_fp32(coop.prompt_learner.ctx.grad, torch.tensor(case["ctx_grad"]), depth=stages(2, backward=True))

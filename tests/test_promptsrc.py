"""PromptSRC against a reference computation written from the official code (muzairkhattak/PromptSRC:
trainers/promptsrc.py's CustomCLIP.forward in training mode, PromptSRC.forward_backward's losses and its Gaussian
prompt aggregation), with every half cast removed, on the same random weights."""

import copy
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, TrainerCallback, pipeline

from coop_hf import MaPLeModel, PromptSRCConfig, PromptSRCModel
from coop_hf.data import IMAGENET_TEMPLATES, with_coop_transform
from coop_hf.methods.promptsrc.trainer import AGGREGATE_FILE, PromptSRCTrainer, gaussian_epoch_weights
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, random_image_dataset
from tests.test_ivlp import official_features
from tests.test_ivlp import official_logits as official_ivlp_logits
from tests.test_maple import CLASSNAMES, IMAGE_SIZE, deep_clip
from tests.test_maple import official_logits as official_maple_logits
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

# sha256 of the official trainers/imagenet_templates.py IMAGENET_TEMPLATES joined by newlines
OFFICIAL_TEMPLATES_SHA256 = "dc3398ed3ffc7c259342582bc0f36d7ac66c4dee17981a37b77b0fc9c23d4f72"


def official_fixed_embeddings(clip, tokenizer):
    """VLPromptLearner's `fixed_embeddings`: encode_text of every template filled with each class name (clip.tokenize
    pads to the full context), stacked over the templates and averaged (unnormalised), then normalised in
    CustomCLIP.forward."""
    length = clip.config.text_config.max_position_embeddings
    per_template = []
    with torch.no_grad():
        for template in IMAGENET_TEMPLATES:
            texts = [template.replace("{}", name) for name in CLASSNAMES]
            ids = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")["input_ids"]
            per_template.append(clip.get_text_features(input_ids=ids).pooler_output.unsqueeze(1))
    fixed = torch.cat(per_template, dim=1).mean(dim=1)
    return fixed / fixed.norm(dim=-1, keepdim=True)


def official_loss_terms(model, tokenizer, pixel_values, labels):
    """CustomCLIP.forward (training) and forward_backward's four terms, on copies of the model's prompt tensors."""
    clip, config = model.clip, model.config
    image, text, tensors = official_features(model, pixel_values)
    logit_scale = clip.logit_scale.exp()
    logits = logit_scale * image @ text.t()
    fixed = official_fixed_embeddings(clip, tokenizer)
    with torch.no_grad():
        zero_shot = clip.get_image_features(pixel_values=pixel_values).pooler_output
        zero_shot = zero_shot / zero_shot.norm(dim=-1, keepdim=True)
        zero_shot_logits = logit_scale * zero_shot @ fixed.t()
    kl = F.kl_div(
        F.log_softmax(logits / 1, dim=1), F.log_softmax(zero_shot_logits / 1, dim=1), reduction="sum", log_target=True
    )
    terms = {
        "ce": F.cross_entropy(logits, labels),
        "text_l1": F.l1_loss(text, fixed, reduction="mean") * config.text_loss_weight,
        "image_l1": F.l1_loss(image, zero_shot, reduction="mean") * config.image_loss_weight,
        "kl": kl * (1 * 1) / logits.numel(),
    }
    return logits, terms, tensors


def test_templates_are_the_official_sixty():
    assert len(IMAGENET_TEMPLATES) == 60 and IMAGENET_TEMPLATES[0] == "a photo of a {}."
    assert hashlib.sha256("\n".join(IMAGENET_TEMPLATES).encode()).hexdigest() == OFFICIAL_TEMPLATES_SHA256


@pytest.mark.parametrize("weights", [{}, {"text_loss_weight": 3.0, "image_loss_weight": 0.5}])
def test_every_loss_term_and_gradient_match_the_official_computation(clip_like_backbone, weights):
    family, backbone, tokenizer = clip_like_backbone
    torch.manual_seed(0)
    model = PromptSRCModel.from_clip(
        backbone, CLASSNAMES, tokenizer=tokenizer, prompt_depth_text=2, prompt_depth_vision=2, **weights
    )
    with torch.no_grad():  # moved prompts, so that the regularisers are not at their minimum
        for parameter in model.prompt_state_dict().values():
            parameter.add_(0.05 * torch.randn_like(parameter))
    size = IMAGE_SIZE[family]
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3])
    output = model(pixel_values=pixel_values, labels=labels)
    terms = model.loss_terms(pixel_values, labels, output)
    output.loss.backward()
    expected_logits, expected_terms, tensors = official_loss_terms(model, tokenizer, pixel_values, labels)
    sum(expected_terms.values()).backward()
    forward, backward = stages(2), stages(2, backward=True)  # the two-layer towers side by side
    assert_close_fp32(output.logits, expected_logits, depth=forward)
    assert sorted(terms) == sorted(expected_terms)
    names = sorted(expected_terms)
    for name in names:
        assert expected_terms[name].item() > 0, name
    # The terms as one vector, at the scale of the largest: the small ones (L1 distances between close features, a KL
    # divergence between close distributions) are differences of nearly equal numbers, rounded at that scale.
    ours, official = (torch.stack([values[name] for name in names]) for values in (terms, expected_terms))
    assert_close_fp32(ours, official, depth=forward, msg=f"terms {names}")
    assert_close_fp32(output.loss, sum(expected_terms.values()), depth=forward)
    parameters = dict(model.named_parameters())
    assert sorted(tensors) == sorted(model.prompt_state_dict())
    for name, tensor in tensors.items():
        assert_close_fp32(parameters[name].grad, tensor.grad, depth=backward, msg=name)


@pytest.mark.parametrize(
    ("model_class", "official_logits"), [(MaPLeModel, official_maple_logits), (PromptSRCModel, official_ivlp_logits)]
)
def test_fp32_logits_are_within_half_precision_rounding_of_the_official_fp16_path(
    clip_tokenizer, model_class, official_logits
):
    """The official code trains in fp16 only: its half-precision computation (every tensor cast to half, on the CPU
    here) differs from coop-hf's fp32 by the half casts' rounding. Measured: 9.2e-3 on this tiny model's logits of
    magnitude 7.6; 2.5e-3 on the random ViT-B/32 architecture (benchmarks/README.md)."""
    torch.manual_seed(0)
    model = model_class.from_clip(deep_clip(2), CLASSNAMES, tokenizer=clip_tokenizer, **(
        {"prompt_depth": 2} if model_class is MaPLeModel else {"prompt_depth_text": 2, "prompt_depth_vision": 2}
    ))  # fmt: skip
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = model(pixel_values=pixel_values).logits
    fp16, _ = official_logits(copy.deepcopy(model).half(), pixel_values.half())
    assert fp16.dtype == torch.float16
    gap = (fp16.float() - fp32).abs().max().item()
    assert 0 < gap < 5e-3 * fp32.abs().max().item()


def official_gauss_weights(epochs, mu, sigma):
    """PromptSRC.build_model: get_gauss(mean, std) at epochs 1..N, divided by their (Python) sum."""
    gauss = lambda x: (1 / (sigma * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mu) / sigma) ** 2)  # noqa: E731
    weights = np.array([gauss(a) for a in range(1, epochs + 1)])
    return weights / sum(weights)


@pytest.mark.parametrize(
    ("epochs", "mean", "std", "pinned"),
    [
        (20, 15, 1, {15: 0.3989422806944345, 14: 0.24197072469685796, 20: 1.486719515826214e-06}),  # base-to-new
        (50, 30, 30, {1: 0.01412375431942492, 30: 0.02253523998658723, 50: 0.01804480954096686}),  # few-shot
        (20, 6, 10, {1: 0.05540200612611104, 6: 0.06277869753860156, 20: 0.02356154195767221}),  # cross-dataset
    ],
)
def test_gaussian_weights_of_the_official_configs(epochs, mean, std, pinned):
    weights = gaussian_epoch_weights(epochs, mean, std)
    np.testing.assert_allclose(weights, official_gauss_weights(epochs, mean, std), rtol=1e-12, atol=0)
    assert math.isclose(weights.sum(), 1.0, rel_tol=1e-12)
    for epoch, value in pinned.items():
        assert math.isclose(weights[epoch - 1], value, rel_tol=1e-12), epoch


@pytest.fixture()
def image_dataset(tmp_path):
    return random_image_dataset(tmp_path, CLASSNAMES)


class RecordPrompts(TrainerCallback):
    """Each epoch's prompt before the aggregation (this callback runs before the trainer's own)."""

    def __init__(self):
        self.prompts = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.prompts.append({name: t.clone() for name, t in model.prompt_state_dict().items()})


class StopAfterEpoch(TrainerCallback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = round(state.epoch) == self.epoch


def promptsrc_trainer(tiny_clip_dir, dataset, output_dir, callbacks=()):
    torch.manual_seed(0)
    model = PromptSRCModel.from_clip(
        str(tiny_clip_dir), CLASSNAMES, prompt_depth_text=2, prompt_depth_vision=2, gpa_mean=2.0, gpa_std=1.0
    )
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    args = CoOpTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=3, per_device_train_batch_size=4, learning_rate=0.5,
        warmup_epochs=0, disable_tqdm=True, save_total_limit=None, seed=0,
    )  # fmt: skip
    train = with_coop_transform(dataset, processor, train=True)
    return PromptSRCTrainer(
        model=model, args=args, train_dataset=train, processing_class=processor, callbacks=list(callbacks)
    )


def test_training_ends_with_the_gaussian_aggregate_and_a_resumed_run_aggregates_the_same(
    tiny_clip_dir, image_dataset, tmp_path
):
    recorder = RecordPrompts()
    whole = promptsrc_trainer(tiny_clip_dir, image_dataset, tmp_path / "whole", [recorder])
    whole.train()
    weights = official_gauss_weights(3, 2.0, 1.0)
    final = whole.model.prompt_state_dict()
    assert len(recorder.prompts) == 3
    assert not torch.equal(recorder.prompts[-1]["vision_prompts.0"], final["vision_prompts.0"])
    for name, tensor in final.items():
        expected = sum(float(w) * prompts[name] for w, prompts in zip(weights, recorder.prompts, strict=True))
        assert_close_fp32(tensor, expected, depth=1, msg=name)  # one weighted sum

    stopped = promptsrc_trainer(tiny_clip_dir, image_dataset, tmp_path / "stopped", [StopAfterEpoch(2)])
    stopped.train()
    assert (tmp_path / "stopped" / "checkpoint-6" / AGGREGATE_FILE).is_file()
    resumed = promptsrc_trainer(tiny_clip_dir, image_dataset, tmp_path / "stopped")
    resumed.train(resume_from_checkpoint=True)
    for name, tensor in resumed.model.prompt_state_dict().items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=0, msg=name)

    (tmp_path / "stopped" / "checkpoint-6" / AGGREGATE_FILE).unlink()
    broken = promptsrc_trainer(tiny_clip_dir, image_dataset, tmp_path / "stopped")
    lost = r"checkpoint-6 \(after epoch 2\) holds no prompt_aggregate.safetensors, .*\(drop --resume_from_checkpoint"
    with pytest.raises(ValueError, match=lost):
        broken.train(resume_from_checkpoint=str(tmp_path / "stopped" / "checkpoint-6"))


def test_an_aggregation_centred_past_the_run_is_warned(tiny_clip_dir, image_dataset, tmp_path, transformers_logs):
    trainer = promptsrc_trainer(tiny_clip_dir, image_dataset, tmp_path)
    trainer.prompt_model.config.gpa_mean = 15.0
    trainer.train()
    assert "centred on epoch 15 (--gpa_mean) but the run has 3 epochs" in transformers_logs.text


def test_recipe_configs_and_checks(clip_tokenizer):
    config = PromptSRCConfig(classnames=CLASSNAMES)
    assert (config.text_loss_weight, config.image_loss_weight, config.gpa_mean, config.gpa_std) == (25, 10, 15, 1)
    assert (config.n_ctx, config.n_ctx_vision, config.prompt_depth_text, config.prompt_depth_vision) == (4, 4, 9, 9)
    method = PROMPT_METHODS["promptsrc"]
    args = method.training_arguments(CoOpTrainingArguments("unused"), "base_to_new")
    epochs = method.epochs(None, 16, args, protocol="base_to_new")
    assert (args.learning_rate, args.per_device_train_batch_size, epochs) == (0.0025, 4, 20)
    assert method.recipe("cross_dataset").settings | {
        "prompt_depth_text": 3, "prompt_depth_vision": 3, "gpa_mean": 6.0, "gpa_std": 10.0
    } == method.recipe("cross_dataset").settings  # fmt: skip
    assert method.trainer_class is PromptSRCTrainer
    with pytest.raises(ValueError, match=r"gpa_std \(--gpa_std\) must be a positive number"):
        PromptSRCConfig(classnames=CLASSNAMES, gpa_std=0)
    with pytest.raises(ValueError, match=r"text_loss_weight \(--text_loss_weight\) must be a non-negative number"):
        PromptSRCConfig(classnames=CLASSNAMES, text_loss_weight=-1)
    with pytest.raises(ValueError, match="PromptSRC has no class_token_position setting"):
        PromptSRCConfig(classnames=CLASSNAMES, class_token_position="front")


@pytest.mark.slow
def test_trained_saved_and_loaded_by_the_script(tiny_clip_dir, tmp_path, transformers_logs):
    depths = ["--prompt_depth_text", "2", "--prompt_depth_vision", "1", "--gpa_mean", "2", "--gpa_std", "1"]
    results = run_in_process(flags(tiny_clip_dir, tmp_path, "--method", "promptsrc", *depths))
    assert results["method"] == "promptsrc" and (results["gpa_mean"], results["text_loss_weight"]) == (2.0, 25.0)
    assert "centred on epoch" not in transformers_logs.text
    loaded = AutoModel.from_pretrained(tmp_path / "seed1")
    assert type(loaded) is PromptSRCModel and sorted(loaded.prompt_state_dict()) == [
        "prompt_learner.ctx", "text_prompts.0", "vision_prompts.0"
    ]  # fmt: skip
    card = (tmp_path / "seed1" / "README.md").read_text()
    assert "Gaussian, mean 2, std 1" in card and "25 / 10" in card
    image = Image.open(next((DATA / "oxford_flowers" / "jpg").glob("*.jpg")))
    (best,) = pipeline("image-classification", model=str(tmp_path / "seed1"))(image, top_k=1)
    pixel_values = AutoImageProcessor.from_pretrained(tmp_path / "seed1")(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = loaded(pixel_values=pixel_values).logits.softmax(-1)[0]
    assert best["label"] == loaded.config.id2label[int(probabilities.argmax())]
    assert best["score"] == pytest.approx(probabilities.max().item(), abs=fp32_tolerance(stages(2)))  # at most 1
    with pytest.raises(ValueError, match="--loss gce would replace PromptSRC's own loss"):
        run_in_process(flags(tiny_clip_dir, tmp_path / "gce", "--method", "promptsrc", "--loss", "gce", *depths))


@pytest.mark.slow
def test_transfer_takes_the_cross_dataset_config(tiny_clip_dir, tmp_path):
    """transfer.py trains PromptSRC with the reference's cross-dataset settings (GPA mean 6, std 10; depth 3 / 3
    unless the flags say otherwise) and evaluates the prompt on the target's classes."""
    from coop_hf.runners.arguments import PromptArguments
    from coop_hf.runners.transfer import TransferArguments, transfer_study

    arguments = TransferArguments(
        model_name_or_path=str(tiny_clip_dir), dataset="oxford_flowers", targets=["caltech101"], data_dir=str(DATA),
        shots=1, method="promptsrc",
    )  # fmt: skip
    args = CoOpTrainingArguments(str(tmp_path / "out"), num_train_epochs=1, disable_tqdm=True)
    with pytest.raises(ValueError, match=r"prompt_depth_text=3 \(--prompt_depth_text\) exceeds the 2 layers"):
        transfer_study(arguments, PromptArguments(), args)
    record = transfer_study(arguments, PromptArguments(prompt_depth_text=2, prompt_depth_vision=1), args)
    assert (record["gpa_mean"], record["gpa_std"], record["prompt_depth_vision"]) == (6.0, 10.0, 1)
    (target,) = record["targets"]
    assert target["dataset"] == "caltech101" and 0 <= target["accuracy"] <= 100

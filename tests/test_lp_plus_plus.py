"""LP++ against a reference computation written from the official code (FereshteShakeri/FewShot-CLIP-Strong-Baseline:
methods/linear_probe_p2.py calculate_lr_w, calculate_lr_alpha, calculate_init_alpha, LinearProbe_P2.forward;
methods/utils.py compute_centroids, compute_centroids_alpha), on the same features and text weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import eigh
from torch import nn
from transformers import AutoModel

from coop_hf import LPPlusPlusConfig, LPPlusPlusModel
from coop_hf.methods.lp_plus_plus.trainer import (
    LP_CROP_SCALE,
    LPPlusPlusTrainer,
    fit_lp_plus_plus,
    lp_plus_plus_step_sizes,
)
from tests.test_tip_adapter import (  # noqa: F401
    CLASSNAMES,
    SHOTS,
    TEMPLATES,
    CachedSplits,
    clustered_features,
    fit,
    official_clip_weights,
)
from tests.test_train_e2e import flags, run_in_process
from tests.tolerances import assert_close_fp32, stages


def official_lp_plus_plus(features, labels, val, val_labels, test, text_weights, shots, epochs):
    """LinearProbe_P2.forward after the feature extraction, as written (fp32; `text_weights` [dim, classes]): the
    test logits at the last epoch of best validation accuracy."""
    one_hot = F.one_hot(labels, len(labels.unique())).float()
    centroids = one_hot.T @ features  # compute_centroids: the per-class sums
    classifier = nn.Linear(features.shape[1], int(features.shape[0] / shots), bias=True)
    classifier.weight.data = centroids
    lr_temp = (4 * features.shape[0]) / max(eigh((features.T @ features).numpy())[0])  # calculate_lr_w
    z = features @ text_weights  # calculate_init_alpha, compute_centroids_alpha
    alpha_tilde = (one_hot * z / one_hot.sum(-2, keepdim=True)).sum(0).double() * shots
    final_init_alpha_mean = torch.mean(250 / shots * alpha_tilde)
    alpha_vec = (final_init_alpha_mean * torch.ones(1, int(features.shape[0] / shots))).float().requires_grad_(True)
    lr_alpha = features.shape[0] / (max(torch.sum(torch.pow(features @ text_weights, 2), dim=0)) * 4)
    optimizer = torch.optim.SGD(classifier.parameters(), lr_temp, momentum=0.9)
    best_acc, logits_test = 0.0, None
    for epoch in range(epochs):
        vision_logits = classifier(features)
        logits = vision_logits + torch.ones(features.shape[0], 1) @ alpha_vec * (features @ text_weights)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            alpha_vec.data -= lr_alpha * alpha_vec.grad.data
        with torch.no_grad():
            logits_val = classifier(val) + torch.ones(val.shape[0], 1) @ alpha_vec * (val @ text_weights)
            acc_val = np.mean(logits_val.argmax(dim=1).numpy() == val_labels.numpy()) * 100.0
            if acc_val >= best_acc:
                best_acc = acc_val
                logits_test = classifier(test) + torch.ones(test.shape[0], 1) @ alpha_vec * (test @ text_weights)
    return logits_test, final_init_alpha_mean.item(), float(lr_temp), float(lr_alpha)


def test_lp_plus_plus_matches_the_official_fit(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    dim, epochs = clip.config.projection_dim, 60
    views, labels = clustered_features(dim, views=1, per_class=SHOTS, spread=1.0)
    val, val_labels = clustered_features(dim, views=1, per_class=3, seed=1, spread=1.0)
    test, _ = clustered_features(dim, views=1, per_class=5, seed=2, spread=1.0)
    val, test = F.normalize(val[0], dim=-1), F.normalize(test[0], dim=-1)
    model = LPPlusPlusModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, templates=TEMPLATES)
    splits = CachedSplits(views, labels, val, val_labels, crop_scale=LP_CROP_SCALE)
    _, output = fit(model, splits, tmp_path, LPPlusPlusTrainer, num_train_epochs=epochs, seed=3)
    assert splits.calls == [1, "val"]  # one augmented view, the few-shot validation split
    weight = model.weight.clone()
    torch.rand(3)  # what draws from torch's RNG before the fit (encoding the views) changes nothing
    fit(model, splits, tmp_path, LPPlusPlusTrainer, num_train_epochs=epochs, seed=3)
    assert torch.equal(model.weight, weight)

    torch.manual_seed(3)  # the Linear layer's bias starts from torch's RNG seeded with args.seed
    expected, init_alpha, lr_weight, lr_alpha = official_lp_plus_plus(
        F.normalize(views[0], dim=-1), labels, val, val_labels, test,
        official_clip_weights(clip, tokenizer, TEMPLATES), SHOTS, epochs,
    )  # fmt: skip
    metrics = output.metrics
    assert (metrics["init_alpha"], metrics["lr_weight"], metrics["lr_alpha"]) == pytest.approx(
        (init_alpha, lr_weight, lr_alpha), rel=1e-5
    )
    torch.testing.assert_close(model(image_embeds=test).logits, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(model.alpha, torch.full_like(model.alpha, init_alpha))  # alpha took its steps
    assert 10 < metrics["best_epoch"] <= epochs  # kept after alpha's first step


def test_a_class_without_training_images_leaves_the_step_sizes_finite():
    """Label noise can take every shot of a class away: the initial alpha is the mean over the other classes."""
    features, labels = clustered_features(8, views=1, per_class=2)
    text = F.normalize(torch.randn(len(CLASSNAMES), 8), dim=-1)
    features, kept = F.normalize(features[0], dim=-1), labels != 1
    _, _, init_alpha = lp_plus_plus_step_sizes(features[kept], labels[kept], text)
    own = [(features[labels == k] @ text[k]).mean() for k in range(len(CLASSNAMES)) if k != 1]
    assert init_alpha == pytest.approx(250 * torch.stack(own).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="--num_train_epochs 0 is too few"):
        fit_lp_plus_plus(features, labels, features, labels, text, 0)


def test_new_classes_rank_as_zero_shot_and_saved_tensors_reload(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    views, labels = clustered_features(clip.config.projection_dim, views=1, per_class=SHOTS)
    model = LPPlusPlusModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer)
    never_fitted = model(image_embeds=views[0]).logits
    zero_shot = model.backbone.logits(F.normalize(views[0], dim=-1), model.text_embeds)
    assert torch.equal(never_fitted.argmax(-1), zero_shot.argmax(-1))
    splits = CachedSplits(views, labels, F.normalize(views[0], dim=-1), labels, crop_scale=LP_CROP_SCALE)
    fit(model, splits, tmp_path / "fit", LPPlusPlusTrainer, num_train_epochs=20)
    fitted = model(image_embeds=views[0]).logits

    model.save_pretrained(tmp_path / "lp")
    loaded = AutoModel.from_pretrained(tmp_path / "lp", clip_model=clip, tokenizer=tokenizer)
    assert type(loaded) is LPPlusPlusModel and sorted(loaded.prompt_state_dict()) == ["alpha", "bias", "weight"]
    torch.testing.assert_close(loaded(image_embeds=views[0]).logits, fitted)

    loaded.set_classnames(["lily", "orchid", "rose"])  # new classes: w = 0, b = 0, the mean alpha
    logits = loaded(image_embeds=views[0]).logits
    assert_close_fp32(logits[:, 2], fitted[:, 2], depth=stages(2))
    text = loaded.text_embeds[:2]
    assert_close_fp32(logits[:, :2], loaded.alpha.mean() * F.normalize(views[0], dim=-1) @ text.T, depth=1)
    assert "fitted_classnames" not in LPPlusPlusConfig.prompt_settings()


@pytest.mark.slow
def test_lp_plus_plus_runs_from_the_command_line_and_refuses_gce(tiny_clip_dir, tmp_path):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", "lp++")
    del arguments[arguments.index("--n_ctx") : arguments.index("--n_ctx") + 2]  # a CoOp setting
    with pytest.raises(ValueError, match=r"LP\+\+ is fitted by its own procedure, which --loss gce cannot change"):
        run_in_process([*arguments, "--loss", "gce"])
    with pytest.raises(ValueError, match=r"LP\+\+ is fitted on cached image features.*drop --cached_views"):
        run_in_process([*arguments, "--cached_views", "2"])
    results = run_in_process(arguments)
    assert results["method"] == "lp++" and results["epochs"] == 2 and results["templates"] == [
        "a photo of a {}, a type of flower."
    ]  # fmt: skip
    card = (tmp_path / "seed1" / "README.md").read_text()
    assert "full-batch SGD" in card and "fitted classes" in card

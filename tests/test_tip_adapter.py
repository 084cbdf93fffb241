"""Tip-Adapter and Tip-Adapter-F against reference computations written from the official code
(gaopengcuhk/Tip-Adapter: utils.py clip_classifier, build_cache_model, search_hp; main.py run_tip_adapter,
run_tip_adapter_F), on the same random weights and the same features."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModel, pipeline

from coop_hf import LPPlusPlusModel, TipAdapterConfig, TipAdapterModel, backbone_for
from coop_hf.methods.tip_adapter.configuration_tip_adapter import REFERENCE_SEARCH, TIP_ADAPTER_CROP_SCALE
from coop_hf.methods.tip_adapter.trainer import TipAdapterFTrainer, TipAdapterTrainer, search_grid
from coop_hf.noise import NO_NOISE, NoiseSpec
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.prompt_learning import PromptRun
from coop_hf.runners.settings import RunSettings
from coop_hf.training import CoOpTrainingArguments
from tests.conftest import DATA, load_example
from tests.test_train_e2e import flags, run_in_process
from tests.test_transfer import common
from tests.tolerances import assert_close_fp32, stages

CLASSNAMES = ["daisy", "sea lion", "rose", "tulip", "iris"]
SHOTS = 4
TEMPLATES = ["a photo of a {}.", "art of the {}."]


class CachedSplits:
    """`FitData` on given features: [views, images, dim] training views and the validation features."""

    train = None  # no class list to check

    def __init__(self, views, labels, val, val_labels, crop_scale=TIP_ADAPTER_CROP_SCALE):
        self.views, self.labels, self.val, self.val_labels, self.crop_scale = (
            views,
            labels,
            val,
            val_labels,
            crop_scale,
        )
        self.calls = []

    def train_views(self, num_views, *, crop_scale, first_view=0):
        assert crop_scale == self.crop_scale and first_view + num_views <= len(self.views)
        self.calls.append(num_views if not first_view else (first_view, num_views))
        return self.views[first_view : first_view + num_views], self.labels

    def val_features(self, *, full=False):
        self.calls.append("full val" if full else "val")
        return self.val, self.val_labels


def clustered_features(dim, views, per_class, classes=5, spread=1.5, seed=0):
    """Features around one random centre per class (the same centres for every `seed`), so that caches, searches
    and fits have something to find."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1000 + seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(views, len(labels), dim, generator=generator)
    return features, labels


def official_clip_weights(clip, tokenizer, templates):
    """utils.clip_classifier: per class, each template's normalised text features, averaged, renormalised;
    [dim, classes]."""
    weights = []
    length = clip.config.text_config.max_position_embeddings
    with torch.no_grad():
        for classname in CLASSNAMES:
            ids = tokenizer([t.format(classname) for t in templates], padding="max_length", max_length=length,
                            return_tensors="pt")["input_ids"]  # fmt: skip
            embeddings = clip.get_text_features(input_ids=ids).pooler_output
            embeddings /= embeddings.norm(dim=-1, keepdim=True)
            embedding = embeddings.mean(dim=0)
            weights.append(embedding / embedding.norm())
    return torch.stack(weights, dim=1)


def official_cache(views, labels, augment_views):
    """utils.build_cache_model: the views' features averaged, normalised, transposed; one-hot values."""
    cache_keys = views[:augment_views].mean(dim=0)
    cache_keys /= cache_keys.norm(dim=-1, keepdim=True)
    return cache_keys.permute(1, 0), F.one_hot(labels).float()


def cls_acc(output, target):
    pred = output.topk(1, 1, True, True)[1].t()
    return 100 * float(pred.eq(target.view(1, -1).expand_as(pred)).float().sum()) / target.shape[0]


def official_search(cfg, cache_keys, cache_values, features, labels, clip_weights, adapter=None):
    """utils.search_hp, as written."""
    beta_list = [
        i * (cfg["search_scale"][0] - 0.1) / cfg["search_step"][0] + 0.1 for i in range(cfg["search_step"][0])
    ]
    alpha_list = [
        i * (cfg["search_scale"][1] - 0.1) / cfg["search_step"][1] + 0.1 for i in range(cfg["search_step"][1])
    ]
    best_acc, best_beta, best_alpha = 0, 0, 0
    for beta in beta_list:
        for alpha in alpha_list:
            affinity = adapter(features) if adapter else features @ cache_keys
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
            clip_logits = 100.0 * features @ clip_weights
            acc = cls_acc(clip_logits + cache_logits * alpha, labels)
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha


def official_tip_logits(features, cache_keys, cache_values, clip_weights, beta, alpha, adapter=None):
    affinity = adapter(features) if adapter else features @ cache_keys
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
    return 100.0 * features @ clip_weights + cache_logits * alpha


def fit(model, splits, tmp_path, trainer_class=TipAdapterTrainer, **arguments):
    args = CoOpTrainingArguments(output_dir=str(tmp_path), disable_tqdm=True, report_to=[], **arguments)
    trainer = trainer_class(model=model, args=args, fit_data=splits)
    return trainer, trainer.train()


def test_search_grid_is_the_reference_list():
    assert (
        search_grid(12, 200)[:3] == [0.1, 0.1 + 11.9 / 200, 0.1 + 2 * 11.9 / 200] and len(search_grid(12, 200)) == 200
    )
    assert search_grid(5, 20)[-1] == 19 * 4.9 / 20 + 0.1


def test_tip_adapter_cache_search_and_logits_match_the_official_code(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    dim = clip.config.projection_dim
    views, labels = clustered_features(dim, views=10, per_class=SHOTS)
    val, val_labels = clustered_features(dim, views=1, per_class=3, seed=1)  # coarse accuracies: ties
    test, test_labels = clustered_features(dim, views=1, per_class=5, seed=2)
    val, test = F.normalize(val[0], dim=-1), F.normalize(test[0], dim=-1)
    cfg = {"search_scale": [12, 5], "search_step": [40, 10], "init_beta": 1, "init_alpha": 3, "augment_epoch": 10}
    model = TipAdapterModel.from_clip(
        clip, CLASSNAMES, tokenizer=tokenizer, templates=TEMPLATES, search_scale=cfg["search_scale"],
        search_steps=cfg["search_step"], init_alpha=3.0,
    )  # fmt: skip
    splits = CachedSplits(views, labels, val, val_labels)
    _, output = fit(model, splits, tmp_path)
    assert splits.calls == [10, "full val"]  # the cache from 10 views, the search on the whole validation split

    clip_weights = official_clip_weights(clip, tokenizer, TEMPLATES)
    assert_close_fp32(model.text_embeds, clip_weights.T, depth=stages(2))
    cache_keys, cache_values = official_cache(views, labels, 10)
    assert_close_fp32(model.cache_keys, cache_keys.T, depth=1)  # a mean, normalised
    assert torch.equal(model.cache_values, cache_values) and torch.equal(model.cache_labels, labels)
    beta, alpha = official_search(cfg, cache_keys, cache_values, val, val_labels, clip_weights)
    assert (model.beta.item(), model.alpha.item()) == pytest.approx((beta, alpha), rel=1e-6)
    assert (output.metrics["beta"], output.metrics["alpha"]) == (beta, pytest.approx(alpha, rel=1e-6))
    # several settings reach the best accuracy, so the match also proves the order of the search and its tie rule
    best = [
        (b, a) for b in search_grid(12, 40) for a in search_grid(5, 10)
        if cls_acc(official_tip_logits(val, cache_keys, cache_values, clip_weights, b, a), val_labels)
        == output.metrics["val_accuracy"]
    ]  # fmt: skip
    assert best[0] == (beta, alpha) and min(best, key=lambda setting: setting[::-1]) != best[0]  # not alpha-first
    expected = official_tip_logits(test, cache_keys, cache_values, clip_weights, beta, alpha)
    assert_close_fp32(model(image_embeds=test).logits, expected, depth=stages(2))  # the text tower, then the head


def test_tip_adapter_f_fine_tuning_matches_the_official_loop(clip_and_tokenizer, tmp_path):
    """run_tip_adapter_F with the epoch chosen on the validation split (the reference chooses it on the test split:
    see the trainer), a fresh view per epoch, then search_hp with the fine-tuned keys."""
    clip, tokenizer = clip_and_tokenizer
    dim, augment, epochs, batch_size = clip.config.projection_dim, 3, 4, 8
    views, labels = clustered_features(dim, views=augment + epochs, per_class=SHOTS, spread=3.0)
    val, val_labels = clustered_features(dim, views=1, per_class=6, seed=1, spread=3.0)
    val = F.normalize(val[0], dim=-1)
    cfg = {"search_scale": [7, 3], "search_step": [20, 10], "init_beta": 1.0, "init_alpha": 1.17, "lr": 0.01}
    model = TipAdapterModel.from_clip(
        clip, CLASSNAMES, tokenizer=tokenizer, templates=TEMPLATES, fine_tune=True, augment_views=augment,
        search_scale=cfg["search_scale"], search_steps=cfg["search_step"],
    )  # fmt: skip
    assert model.method_name == "Tip-Adapter-F" and (model.alpha.item(), model.beta.item()) == pytest.approx((1.17, 1))
    _, output = fit(  # args.seed seeds the order of the batches
        model, CachedSplits(views, labels, val, val_labels), tmp_path, TipAdapterFTrainer, num_train_epochs=epochs,
        learning_rate=cfg["lr"], weight_decay=0.01, per_device_train_batch_size=batch_size, seed=7,
    )  # fmt: skip
    keys = model.cache_keys.clone()
    torch.rand(3)  # what draws from torch's RNG before the fit (encoding the views) changes nothing
    fit(model, CachedSplits(views, labels, val, val_labels), tmp_path, TipAdapterFTrainer, num_train_epochs=epochs,
        learning_rate=cfg["lr"], weight_decay=0.01, per_device_train_batch_size=batch_size, seed=7)  # fmt: skip
    assert torch.equal(model.cache_keys, keys)

    clip_weights = official_clip_weights(clip, tokenizer, TEMPLATES)
    cache_keys, cache_values = official_cache(views, labels, augment)
    adapter = nn.Linear(cache_keys.shape[0], cache_keys.shape[1], bias=False)
    adapter.weight = nn.Parameter(cache_keys.t().clone())
    loader = DataLoader(range(len(labels)), batch_size=batch_size, shuffle=True,  # stands for the images' loader
                        generator=torch.Generator().manual_seed(7))  # fmt: skip
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg["lr"], eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    beta, alpha = cfg["init_beta"], cfg["init_alpha"]
    best_acc, best_weight, losses = 0.0, None, []
    for train_idx in range(epochs):
        for index in loader:
            image_features = views[augment + train_idx, index]  # a fresh augmented view per epoch
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            affinity = adapter(image_features)
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
            clip_logits = 100.0 * image_features @ clip_weights
            loss = F.cross_entropy(clip_logits + cache_logits * alpha, labels[index])
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            acc = cls_acc(official_tip_logits(val, None, cache_values, clip_weights, beta, alpha, adapter), val_labels)
        if acc > best_acc:
            best_acc, best_weight = acc, adapter.weight.detach().clone()
    adapter.weight = nn.Parameter(best_weight)
    with torch.no_grad():
        best_beta, best_alpha = official_search(cfg, None, cache_values, val, val_labels, clip_weights, adapter)
    # Each AdamW step runs the adapter's head (one linear layer, the exponentials, the loss) forward and back.
    assert_close_fp32(model.cache_keys, best_weight, depth=stages(0, backward=True, steps=output.global_step))
    assert not torch.allclose(best_weight, cache_keys.t(), atol=1e-3)  # fine-tuning moved the keys
    assert (model.beta.item(), model.alpha.item()) == pytest.approx((best_beta, best_alpha), rel=1e-6)
    assert output.metrics["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert output.global_step == epochs * len(loader) and not model.cache_keys.requires_grad


def test_new_classes_are_zero_shot_and_shared_classes_keep_their_cache(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    views, labels = clustered_features(clip.config.projection_dim, views=2, per_class=SHOTS)
    model = TipAdapterModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, augment_views=2, search_steps=[0, 0])
    fit(model, CachedSplits(views, labels, views[0], labels), tmp_path)
    assert model.config.fitted_classnames == CLASSNAMES and model.alpha.item() == pytest.approx(1.17)
    images = F.normalize(torch.randn(6, clip.config.projection_dim), dim=-1)
    fitted_logits = model(image_embeds=images).logits

    model.set_classnames(["lily", "orchid"])  # no cache entry: zero-shot CLIP
    zero_shot = TipAdapterModel.from_clip(clip, ["lily", "orchid"], tokenizer=tokenizer)
    assert len(zero_shot.cache_keys) == 0
    assert_close_fp32(model(image_embeds=images).logits, zero_shot(image_embeds=images).logits, depth=stages(2))
    model.set_classnames(["lily", "rose"])  # rose keeps its column of the cache
    assert model.cache_values[:, 1].sum() == SHOTS and model.cache_values[:, 0].sum() == 0
    assert_close_fp32(model(image_embeds=images).logits[:, 1], fitted_logits[:, 2], depth=stages(2))
    model.set_classnames(CLASSNAMES)
    assert_close_fp32(model(image_embeds=images).logits, fitted_logits, depth=stages(2))


def test_saved_and_loaded_with_the_cache(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    views, labels = clustered_features(clip.config.projection_dim, views=2, per_class=SHOTS)
    model = TipAdapterModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, augment_views=2, search_steps=[5, 3])
    fit(model, CachedSplits(views, labels, views[0], labels), tmp_path / "fit")
    model.save_pretrained(tmp_path / "tip")
    loaded = AutoModel.from_pretrained(tmp_path / "tip", clip_model=clip, tokenizer=tokenizer)
    assert type(loaded) is TipAdapterModel and sorted(loaded.prompt_state_dict()) == [
        "alpha", "beta", "cache_keys", "cache_labels"
    ]  # fmt: skip
    assert (
        loaded.config.fitted_classnames == CLASSNAMES and "fitted_classnames" not in TipAdapterConfig.prompt_settings()
    )
    images = torch.randn(3, clip.config.projection_dim)
    torch.testing.assert_close(loaded(image_embeds=images).logits, model(image_embeds=images).logits)


def test_reference_configs_and_checks():
    assert TipAdapterConfig.dataset_settings("oxford_flowers") == {
        "templates": ["a photo of a {}, a type of flower."], "search_scale": [50, 50], "init_beta": 1, "init_alpha": 10
    }  # fmt: skip
    assert len(TipAdapterConfig.dataset_settings("imagenet")["templates"]) == 7 and len(REFERENCE_SEARCH) == 11
    with pytest.raises(ValueError, match=r"search_steps \(--search_steps BETA ALPHA\)"):
        TipAdapterConfig(classnames=CLASSNAMES, search_steps=[200, 0])
    with pytest.raises(ValueError, match=r"templates \(--templates\)"):
        TipAdapterConfig(classnames=CLASSNAMES, templates=["a photo"])


@pytest.mark.slow
def test_tip_adapter_f_runs_from_the_command_line(tiny_clip_dir, tmp_path):
    arguments = flags(tiny_clip_dir, tmp_path, "--method", "tip-adapter-f", "--augment_views", "2")
    del arguments[arguments.index("--n_ctx") : arguments.index("--n_ctx") + 2]  # a CoOp setting
    results = run_in_process(arguments)
    assert results["method"] == "tip-adapter-f" and results["augment_views"] == 2 and results["epochs"] == 2
    loaded = AutoModel.from_pretrained(tmp_path / "seed1")
    assert type(loaded) is TipAdapterModel and loaded.config.fine_tune and len(loaded.cache_keys) == 102
    card = (tmp_path / "seed1" / "README.md").read_text()
    assert "Tip-Adapter-F" in card and "AdamW lr 0.05, eps 0.0001, weight decay 0.01" in card
    assert "keys fine-tuned" in card


def test_tip_adapter_f_trains_the_reference_epochs_per_dataset(tmp_path):
    method, args = PROMPT_METHODS["tip-adapter-f"], CoOpTrainingArguments(output_dir=str(tmp_path))
    assert method.epochs(SimpleNamespace(dataset="caltech101"), 16, args) == 20
    assert method.epochs(SimpleNamespace(dataset="eurosat"), 16, args) == 100  # configs/eurosat.yaml
    args = CoOpTrainingArguments(output_dir=str(tmp_path), num_train_epochs=7)
    assert method.epochs(SimpleNamespace(dataset="eurosat"), 16, args) == 7


def test_the_whole_validation_split_unless_there_is_none_or_its_labels_must_be_noisy():
    whole, few = object(), object()
    plan = lambda splits, noise: PromptRun(  # noqa: E731
        PROMPT_METHODS["tip-adapter"], SimpleNamespace(splits=splits), RunSettings(1, [1], noise=noise), None, 0, None
    )
    assert plan({"val": whole}, NO_NOISE).full_validation_split({"val": few}) is whole
    assert plan({}, NO_NOISE).full_validation_split({"val": few}) is few  # a dataset without a val split
    noisy_val = NoiseSpec("symmetric", 0.5, val=True)
    assert plan({"val": whole}, noisy_val).full_validation_split({"val": few}) is few
    assert plan({"val": whole}, NoiseSpec("symmetric", 0.5)).full_validation_split({"val": few}) is whole


@pytest.mark.slow
def test_base_to_new_is_zero_shot_on_the_new_classes_and_says_so(tiny_clip_dir, tmp_path):
    base_to_new = load_example("base_to_new").main
    flags = [*common(tiny_clip_dir, tmp_path), "--dataset", "oxford_flowers", "--shots", "1",
             "--method", "tip-adapter", "--augment_views", "1", "--search_steps", "4", "2"]  # fmt: skip
    (record,) = base_to_new(flags)
    assert record["new_accuracy"] == record["zeroshot_new_accuracy"]  # no cache entry on a new class
    table = (tmp_path / "results.md").read_text()
    assert f"|  | Tip-Adapter † | {record['base_accuracy']:.2f} | {record['new_accuracy']:.2f} |" in table
    assert table.rstrip().endswith(
        "† Tip-Adapter fits nothing on the new classes: there it is zero-shot CLIP with its own class prompts."
    )
    classifier = pipeline("image-classification", model=str(tmp_path / "oxford_flowers" / "seed1"))
    image = Image.open(next((DATA / "oxford_flowers" / "jpg").iterdir()))
    assert len(classifier(image, top_k=3)) == 3 and classifier.model.config.fitted_classnames[0] == "pink primrose"


@pytest.mark.parametrize("family", ["metaclip_2", "siglip", "siglip2"])
def test_the_fitted_methods_run_and_reload_on_every_family(family, tmp_path):
    """Tip-Adapter-F and LP++ on MetaCLIP 2 and SigLIP (whose logits add the bias): fitted, saved, reloaded."""
    from tiny_backbones import tiny_backbone

    from coop_hf.methods.lp_plus_plus.trainer import LP_CROP_SCALE, LPPlusPlusTrainer

    clip, tokenizer = tiny_backbone(family)
    views, labels = clustered_features(backbone_for(clip).embed_dim, views=4, per_class=SHOTS)
    image = F.normalize(views[0], dim=-1)
    tip = TipAdapterModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer, fine_tune=True, augment_views=2,
                                    search_steps=[5, 3])  # fmt: skip
    fit(tip, CachedSplits(views, labels, image, labels), tmp_path / "tip-fit", TipAdapterFTrainer, num_train_epochs=2,
        per_device_train_batch_size=8)  # fmt: skip
    expected = tip.backbone.logits(image, tip.text_embeds) + tip.alpha * tip.cache_logits(image, tip.beta)
    assert_close_fp32(tip(image_embeds=views[0]).logits, expected, depth=1)  # the head on the same tensors
    lp = LPPlusPlusModel.from_clip(clip, CLASSNAMES, tokenizer=tokenizer)
    splits = CachedSplits(views, labels, image, labels, crop_scale=LP_CROP_SCALE)
    fit(lp, splits, tmp_path / "lp-fit", LPPlusPlusTrainer, num_train_epochs=20)
    for model in (tip, lp):
        model.save_pretrained(tmp_path / model.config.model_type)
        loaded = AutoModel.from_pretrained(tmp_path / model.config.model_type, clip_model=clip, tokenizer=tokenizer)
        assert loaded.config.backbone_family == family
        torch.testing.assert_close(loaded(image_embeds=views[0]).logits, model(image_embeds=views[0]).logits)

"""UPL: confident pseudo-labels per class, and an ensemble of prompts that averages their logits on one CLIP."""

import os
from unittest import mock

import datasets
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, CLIPModel

from coop_hf import CoOpModel
from coop_hf.methods.upl import (
    CoOpEnsemble,
    pseudo_label_accuracy,
    pseudo_label_dataset,
    select_confident_pseudo_labels,
)
from tests.conftest import random_clip, tiny_clip_config

CLASSNAMES = ["cat", "dog", "sunflower"]

# -- pseudo-labels ---------------------------------------------------------------------------------------------

# Rows 0-3 predict class 0 with decreasing confidence, rows 4-5 class 1 (row 5 more confident), row 6 class 2.
LOGITS = torch.tensor(
    [
        [5.0, 0.0, 0.0],
        [4.0, 0.0, 0.0],
        [3.0, 0.0, 0.0],
        [4.0, 0.0, 0.0],  # ties with row 1
        [0.0, 2.0, 0.0],
        [0.0, 6.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
)


def test_selection_keeps_the_top_k_most_confident_per_predicted_class():
    indices, labels, confidences = select_confident_pseudo_labels(LOGITS, top_k=2)
    assert indices.tolist() == [0, 1, 5, 4, 6]  # by class, confidence; the tie 1/3 goes to the lower row
    assert labels.tolist() == [0, 0, 1, 1, 2]
    torch.testing.assert_close(confidences, LOGITS.softmax(-1)[indices, labels])
    everything, _, _ = select_confident_pseudo_labels(LOGITS, top_k=16)
    assert sorted(everything.tolist()) == list(range(7))  # classes predicted fewer than K times keep all


def test_selection_on_random_logits_keeps_at_most_k_and_only_the_most_confident():
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * 3
    indices, labels, confidences = select_confident_pseudo_labels(logits, top_k=8)
    probs, predictions = logits.softmax(-1).max(-1)
    for label in range(5):
        mine = indices[labels == label]
        assert len(mine) == min(8, int((predictions == label).sum()))
        others = probs[(predictions == label) & ~torch.isin(torch.arange(200), mine)]
        assert others.numel() == 0 or probs[mine].min() >= others.max()
    assert torch.equal(labels, predictions[indices])


@pytest.mark.parametrize("top_k", [0, -1, 2.5])
def test_selection_refuses_a_bad_top_k(top_k):
    with pytest.raises(ValueError, match="top_k"):
        select_confident_pseudo_labels(LOGITS, top_k=top_k)


def _unlabeled_split() -> datasets.Dataset:
    features = datasets.Features(
        {"image_path": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASSNAMES)}
    )
    return datasets.Dataset.from_dict(
        {"image_path": [f"/nowhere/{i}.jpg" for i in range(7)], "label": [0, 0, 2, 0, 1, 1, 2]}, features=features
    )


def test_pseudo_label_dataset_keeps_the_true_label_aside():
    pseudo = pseudo_label_dataset(_unlabeled_split(), LOGITS, top_k=2)
    assert pseudo.column_names == ["image_path", "label", "true_label", "pseudo_confidence"]
    assert pseudo["image_path"] == [f"/nowhere/{i}.jpg" for i in (0, 1, 5, 4, 6)]
    assert pseudo["label"] == [0, 0, 1, 1, 2] and pseudo["true_label"] == [0, 0, 1, 1, 2]
    assert pseudo.features["label"].names == CLASSNAMES
    assert pseudo_label_accuracy(pseudo) == 1.0
    everything = pseudo_label_dataset(_unlabeled_split(), LOGITS, top_k=4)  # now also row 2, a class-2 image
    assert pseudo_label_accuracy(everything) == pytest.approx(6 / 7)


def test_pseudo_label_dataset_without_labels_needs_the_class_names():
    unlabeled = _unlabeled_split().remove_columns("label")
    with pytest.raises(ValueError, match="classnames="):
        pseudo_label_dataset(unlabeled, LOGITS)
    pseudo = pseudo_label_dataset(unlabeled, LOGITS, top_k=1, classnames=CLASSNAMES)
    assert pseudo.column_names == ["image_path", "label", "pseudo_confidence"] and pseudo["label"] == [0, 1, 2]
    with pytest.raises(ValueError, match="true_label"):
        pseudo_label_accuracy(pseudo)
    with pytest.raises(ValueError, match="logits has 6 rows"):
        pseudo_label_dataset(unlabeled, LOGITS[:6], classnames=CLASSNAMES)


# -- ensemble --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tiny_clip_dir) -> CLIPModel:
    return CLIPModel.from_pretrained(tiny_clip_dir)


def _member(clip, tokenizer, seed: int, classnames=CLASSNAMES, **settings) -> CoOpModel:
    model = CoOpModel.from_clip(clip, classnames, tokenizer=tokenizer, n_ctx=settings.pop("n_ctx", 4), **settings)
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(seed))
    return model.eval()


@pytest.fixture()
def members(clip, clip_tokenizer) -> list[CoOpModel]:
    return [_member(clip, clip_tokenizer, seed) for seed in (1, 2, 3)]


IMAGE_EMBEDS = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_logits_are_the_mean_of_the_members(members):
    ensemble = CoOpEnsemble(members)
    expected = torch.stack([member(image_embeds=IMAGE_EMBEDS).logits for member in members]).mean(0)
    output = ensemble(image_embeds=IMAGE_EMBEDS, labels=torch.tensor([0, 1, 2, 0, 1]))
    torch.testing.assert_close(output.logits, expected)
    torch.testing.assert_close(output.loss, F.cross_entropy(expected, torch.tensor([0, 1, 2, 0, 1])))
    assert output.text_embeds.shape == (3, 3, 16) and ensemble.config.num_members == 3
    assert ensemble.classnames == CLASSNAMES and ensemble.config.id2label == dict(enumerate(CLASSNAMES))


@torch.no_grad()
def test_images_are_encoded_once_for_all_members(members):
    ensemble = CoOpEnsemble(members)
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    image_embeds = ensemble.clip.get_image_features(pixel_values=pixel_values).pooler_output
    with mock.patch.object(ensemble.clip, "get_image_features", wraps=ensemble.clip.get_image_features) as encode:
        logits = ensemble(pixel_values=pixel_values).logits
    assert encode.call_count == 1
    torch.testing.assert_close(logits, ensemble(image_embeds=image_embeds).logits)


@torch.no_grad()
def test_save_load_round_trip_gives_identical_logits(members, tmp_path):
    ensemble = CoOpEnsemble(members)
    ensemble.save_pretrained(tmp_path)
    saved = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(os.listdir(tmp_path)) == saved
    state = load_file(tmp_path / "model.safetensors")
    assert sorted(state) == [f"members.{i}.prompt_learner.ctx" for i in range(3)]
    card = (tmp_path / "README.md").read_text()
    assert "CoOpEnsemble.from_pretrained(" in card and "| prompts in the ensemble | 3 |" in card
    for reloaded in (CoOpEnsemble.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(reloaded, CoOpEnsemble) and reloaded.config.num_members == 3
        assert all(member.clip is reloaded.clip for member in reloaded.members)
        torch.testing.assert_close(
            reloaded(image_embeds=IMAGE_EMBEDS).logits, ensemble(image_embeds=IMAGE_EMBEDS).logits, rtol=0, atol=0
        )


def test_a_single_prompt_folder_is_not_an_ensemble(members, tmp_path):
    members[0].save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CoOpModel.from_pretrained"):
        CoOpEnsemble.from_pretrained(tmp_path)


def test_push_to_hub_uploads_the_ensemble_folder(members):
    uploaded = {}

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update({name: os.path.getsize(os.path.join(folder_path, name)) for name in os.listdir(folder_path)})
        uploaded["repo_id"] = repo_id
        return "https://huggingface.co/org/upl-test/commit/0"

    with (
        mock.patch("huggingface_hub.HfApi.create_repo", return_value=mock.Mock(repo_id="org/upl-test")),
        mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload_folder),
    ):
        url = CoOpEnsemble(members).push_to_hub("org/upl-test")
    assert url.endswith("/commit/0") and uploaded["repo_id"] == "org/upl-test"
    assert {"README.md", "config.json", "model.safetensors"} <= uploaded.keys()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classnames": ["cat", "dog", "rose"]}, r"classnames: \"class 2 = 'rose'\" vs \"'sunflower'\""),
        ({"classnames": ["cat", "dog"]}, "classnames: '2 classes' vs '3 classes'"),
        ({"n_ctx": 6}, "n_ctx: 6 vs 4"),
        ({"class_token_position": "front"}, "class_token_position"),
        ({"class_specific_context": True}, "class_specific_context"),
    ],
)
def test_mismatched_members_are_refused_by_name(clip, clip_tokenizer, members, change, message):
    odd = _member(clip, clip_tokenizer, 4, **change)
    with pytest.raises(ValueError, match=f"member 3 differs from member 0 in {message}"):
        CoOpEnsemble([*members, odd])


def test_members_must_share_the_clip_weights(clip, clip_tokenizer, tiny_clip_dir, members):
    other = random_clip(tiny_clip_config(), seed=1)
    other.name_or_path = clip.name_or_path  # same id, other weights
    with pytest.raises(ValueError, match="member 1 sits on a different CLIP"):
        CoOpEnsemble([members[0], _member(other, clip_tokenizer, 4)])
    copy = _member(CLIPModel.from_pretrained(tiny_clip_dir), clip_tokenizer, 5)
    expected = copy(image_embeds=IMAGE_EMBEDS).logits
    ensemble = CoOpEnsemble([members[0], copy])
    assert copy.clip is members[0].clip is ensemble.clip  # an identical copy is dropped for the shared CLIP
    torch.testing.assert_close(copy(image_embeds=IMAGE_EMBEDS).logits, expected, rtol=0, atol=0)


def test_an_ensemble_moves_to_new_class_names(members):
    ensemble = CoOpEnsemble(members)
    image_embeds = torch.randn(5, 16)
    ensemble.set_classnames(["tulip", "rose"])
    assert ensemble.classnames == ["tulip", "rose"] and ensemble.config.id2label == {0: "tulip", 1: "rose"}
    with torch.no_grad():
        moved = [member(image_embeds=image_embeds).logits for member in ensemble.members]
        torch.testing.assert_close(ensemble(image_embeds=image_embeds).logits, torch.stack(moved).mean(0))
    assert moved[0].shape == (5, 2)


def test_an_ensemble_takes_only_plain_coop_prompts(members, clip_tokenizer):
    from coop_hf import CoCoOpModel

    cocoop = CoCoOpModel.from_clip(members[0].clip, CLASSNAMES, tokenizer=clip_tokenizer)
    with pytest.raises(TypeError, match="members \\[1\\] are not"):
        CoOpEnsemble([members[0], cocoop])

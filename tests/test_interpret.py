"""What the prompt learned: the nearest vocabulary tokens of each context vector, in code, card and command."""

import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import pipeline

from coop_hf import CoOpEnsemble, CoOpModel
from tests.conftest import load_example, random_clip, tiny_clip_config

CLASSNAMES = ["cat", "dog", "sunflower"]


@pytest.fixture()
def model(clip_tokenizer):
    return CoOpModel.from_clip(
        random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, ctx_init="a photo of a"
    )


def test_an_initialised_context_is_its_own_words(model):
    nearest = model.nearest_tokens(top_k=3)
    assert [tokens[0][0] for tokens in nearest] == ["a", "photo", "of", "a"]
    assert all(tokens[0][1] == 0.0 for tokens in nearest)
    assert all(len(tokens) == 3 and tokens[1][1] <= tokens[2][1] for tokens in nearest)


def test_nearest_tokens_are_the_euclidean_nearest_of_the_vocabulary(model):
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(0))
    vocabulary = model.clip.text_model.embeddings.token_embedding.weight
    for vector, tokens in zip(model.prompt_learner.ctx, model.nearest_tokens(top_k=2), strict=True):
        distances = (vocabulary - vector).norm(dim=-1)
        expected = distances.argsort()[:2].tolist()
        words = [model.tokenizer.decode([i]).strip() for i in expected]
        assert [word for word, _ in tokens] == words
        assert [distance for _, distance in tokens] == pytest.approx(distances[expected].tolist(), rel=1e-5)


def test_class_specific_context_is_interpreted_per_class(clip_tokenizer):
    csc = CoOpModel.from_clip(
        random_clip(tiny_clip_config()), CLASSNAMES, tokenizer=clip_tokenizer, n_ctx=2, class_specific_context=True
    )
    nearest = csc.nearest_tokens(top_k=1)
    assert len(nearest) == 3 and all(len(per_class) == 2 and len(per_class[0]) == 1 for per_class in nearest)
    with pytest.raises(ValueError, match="top_k"):
        csc.nearest_tokens(top_k=0)


def test_card_and_command_show_the_nearest_words(model, tmp_path, tiny_clip_dir, capsys):
    model.config.base_model_name_or_path = str(tiny_clip_dir)
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "| nearest word of each context vector | `a` · `photo` · `of` · `a` |" in card
    lines = load_example("interpret_prompt").main([str(tmp_path), "--top_k", "2"])
    assert len(lines) == 4 and lines[1].startswith("  2: photo (0.0000), ")
    assert "photo (0.0000)" in capsys.readouterr().out
    assert load_example("interpret_prompt").main(["--top_k", "2", "--prompt", str(tmp_path)]) == lines


def test_the_command_names_the_flag_of_a_prompt_it_cannot_read(tmp_path, tiny_clip_dir):
    interpret = load_example("interpret_prompt")
    with pytest.raises(ValueError, match=r"^--prompt 'runs/cop/seed1' is neither a folder nor a Hub id"):
        interpret.main(["runs/cop/seed1"])  # was a 32-line OSError from the Hub client
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^--prompt '.*empty' holds no saved prompt \(.*config\.json"):
        interpret.main(["--prompt", str(tmp_path / "empty")])
    with pytest.raises(ValueError, match=r"holds a model of type 'clip', not a prompt model"):
        interpret.main([str(tiny_clip_dir)])


def test_a_saved_prompt_folder_serves_in_the_pipeline_with_nothing_else(tiny_clip_dir, tmp_path):
    image = Image.new("RGB", (64, 48), color=(200, 30, 30))
    single = CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    single.save_pretrained(tmp_path / "single")
    ensemble = CoOpEnsemble([single, CoOpModel.from_clip(single.clip, CLASSNAMES, n_ctx=4)])
    ensemble.save_pretrained(tmp_path / "ensemble")
    for folder in ("single", "ensemble"):
        predictions = pipeline("image-classification", model=str(tmp_path / folder))(image, top_k=3)
        assert sorted(prediction["label"] for prediction in predictions) == sorted(CLASSNAMES)


def test_the_model_cards_usage_snippets_run(tiny_clip_dir, tmp_path):
    model = CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4)
    model.save_pretrained(tmp_path / "prompt", repo_id="org/coop-demo")
    Image.new("RGB", (64, 48), color=(30, 200, 30)).save(tmp_path / "image.jpg")
    card = (tmp_path / "prompt" / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 2
    code = "\n".join(snippets).replace("org/coop-demo", str(tmp_path / "prompt"))
    code = code.replace("image.jpg", str(tmp_path / "image.jpg"))
    # a fresh interpreter, as a reader of the card has: nothing registered with the Auto classes but what it imports
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_byte_level_tokens_print_as_text(model):
    """A context vector on a byte-level BPE token reads as the text it encodes, not as its byte symbols."""
    fist = model.tokenizer.convert_tokens_to_ids("ðŁĳĬðŁı¼")
    with torch.no_grad():
        model.prompt_learner.ctx[0] = model.clip.text_model.embeddings.token_embedding.weight[fist]
    assert model.nearest_tokens(top_k=1)[0][0][0] == "👊🏼"

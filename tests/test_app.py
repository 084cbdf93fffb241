"""examples/app.py, the Gradio demo: its predictions are the pipeline's, and a real headless browser (Debian's
chromium through selenium) uploads a shared image and finds every model's labels rendered."""

import shutil
import socket

import pytest
import torch
from PIL import Image
from tiny_backbones import CLASSNAMES as SIGLIP_CLASSNAMES
from tiny_backbones import tiny_backbone
from transformers import AutoImageProcessor, AutoModel, Siglip2ImageProcessor, pipeline

from coop_hf import CoOpModel, IVLPModel
from tests.conftest import DATA, load_example
from tests.tolerances import assert_close_fp32, fp32_tolerance, stages

CLASSNAMES = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold"]


@pytest.fixture(scope="module")
def prompt_dirs(tiny_clip_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    CoOpModel.from_clip(str(tiny_clip_dir), CLASSNAMES, n_ctx=4).save_pretrained(folder / "coop")
    ivlp = IVLPModel.from_clip(str(tiny_clip_dir), CLASSNAMES, prompt_depth_text=2, prompt_depth_vision=1)
    ivlp.save_pretrained(folder / "ivlp")
    return [folder / "coop", folder / "ivlp"]


@pytest.fixture(scope="module")
def flower():
    return str(sorted((DATA / "oxford_flowers" / "jpg").glob("*.jpg"))[0])


def pipeline_top(prompt_dir, image, top_k, classnames=None):
    model = AutoModel.from_pretrained(prompt_dir)
    if classnames is not None:
        model.set_classnames(classnames)
    classifier = pipeline("image-classification", model=model, image_processor=model.image_processor)
    return {entry["label"]: entry["score"] for entry in classifier(image, top_k=top_k)}


@pytest.mark.slow
def test_each_prompts_prediction_is_the_pipelines_also_on_an_edited_class_list(prompt_dirs, flower):
    app = load_example("app")
    demo = app.PromptDemo([str(path) for path in prompt_dirs], top_k=3)
    image = Image.open(flower)
    predictions = demo.predict(image)
    assert list(predictions)[0].startswith("Zero-shot CLIP") and len(predictions) == 3
    for name, prompt_dir in zip(list(predictions)[1:], prompt_dirs, strict=True):
        expected = pipeline_top(prompt_dir, image, 3)
        assert list(predictions[name]) == list(expected)
        # Probabilities (at most 1) through the two-layer towers: the float32 rule's tolerance, absolute.
        assert list(predictions[name].values()) == pytest.approx(
            list(expected.values()), abs=fp32_tolerance(stages(2))
        )
    edited = ["rose", "tulip", "daisy", "sunflower"]
    predictions = demo.predict(image, edited)
    for name, prompt_dir in zip(list(predictions)[1:], prompt_dirs, strict=True):
        expected = pipeline_top(prompt_dir, image, 3, edited)
        assert set(predictions[name]) <= set(edited) and list(predictions[name]) == list(expected)
    assert set(predictions[list(predictions)[0]]) <= set(edited)  # zero-shot CLIP over the edited list too
    with pytest.raises(ValueError, match=r"--top_k must be at least 1"):
        app.PromptDemo([str(prompt_dirs[0])], top_k=0)
    assert app.parse_classnames("rose, tulip\n daisy \n") == ["rose", "tulip", "daisy"]


def test_a_prompt_that_cannot_be_read_is_one_line_naming_the_flag(tmp_path):
    app = load_example("app")
    with pytest.raises(ValueError, match=r"^--prompts 'runs/cop/seed1' is neither a folder nor a Hub id"):
        app.PromptDemo(["runs/cop/seed1"])  # was a 67-line traceback from the Hub client
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^--prompts '.*empty' holds no saved prompt"):
        app.PromptDemo([str(tmp_path / "empty")])


@pytest.fixture(scope="module")
def siglip2_prompt(tmp_path_factory):
    """(base checkpoint folder, saved CoOp prompt folder) of a tiny SigLIP 2 whose processor is a NaFlex one."""
    folder = tmp_path_factory.mktemp("siglip2")
    model, tokenizer = tiny_backbone("siglip2")
    model.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    Siglip2ImageProcessor(patch_size=16, max_num_patches=16).save_pretrained(folder / "base")
    CoOpModel.from_clip(str(folder / "base"), SIGLIP_CLASSNAMES).save_pretrained(folder / "coop")
    return folder / "base", folder / "coop"


def test_a_naflex_processor_serves_a_siglip2_prompt_at_the_images_aspect_ratio(siglip2_prompt, flower):
    base, prompt = siglip2_prompt
    naflex = AutoImageProcessor.from_pretrained(base)
    image = Image.open(flower).convert("RGB")
    inputs = naflex(images=[image], return_tensors="pt")
    rows, columns = inputs["spatial_shapes"][0].tolist()
    assert rows != columns and rows * columns <= 16  # the image's own grid, not the square crop's
    classifier = pipeline("image-classification", model=str(prompt), image_processor=naflex)
    scores = {entry["label"]: entry["score"] for entry in classifier(image, top_k=len(SIGLIP_CLASSNAMES))}
    with torch.no_grad():
        expected = classifier.model(**inputs).logits.softmax(-1)[0]
    assert_close_fp32(torch.tensor([scores[name] for name in SIGLIP_CLASSNAMES]), expected, depth=stages(2))
    demo = load_example("app").PromptDemo([str(prompt)], top_k=2, native_resolution=True)
    name = next(iter(demo.models))
    predictions = demo.predict(Image.open(flower))[name]
    assert list(predictions) == sorted(scores, key=scores.get, reverse=True)[:2]
    assert list(predictions.values()) == pytest.approx(sorted(scores.values(), reverse=True)[:2], abs=1e-6)


def test_native_resolution_is_refused_on_other_backbones(prompt_dirs, siglip2_prompt):
    app = load_example("app")
    with pytest.raises(ValueError, match=r"^--native_resolution applies to prompts on a SigLIP 2 NaFlex backbone; "
                                         r"--prompts '.*coop' is on CLIP"):  # fmt: skip
        app.PromptDemo([str(siglip2_prompt[1]), str(prompt_dirs[0])], native_resolution=True)


def test_the_start_up_lines_name_the_flags_and_a_taken_port_is_one_line(capsys):
    import gradio as gr

    app = load_example("app")
    port = free_port()
    with gr.Blocks() as page:
        gr.Markdown("page")
    app.launch(page, port=port, share=False)
    try:
        out = capsys.readouterr().out
        assert "add --share for a public link" in out and "share=True" not in out
        taken = rf"^--port {port} is taken .*: pass another --port\.$"
        with gr.Blocks() as other, pytest.raises(ValueError, match=taken):
            app.launch(other, port=port, share=False)
    finally:
        page.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_browser_uploads_an_image_and_sees_every_models_labels(prompt_dirs, flower):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver_path, "Debian's chromium and chromium-driver are needed (the README's set-up has them)"
    app = load_example("app")
    demo = app.PromptDemo([str(path) for path in prompt_dirs], top_k=3)
    port = free_port()
    page = app.build_app(demo, [flower])
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_window_size(1400, 1000)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
        upload.send_keys(flower)
        expected = pipeline_top(prompt_dirs[0], Image.open(flower), 3)
        top = next(iter(expected))
        wait.until(lambda d: top in d.find_element(By.ID, "prediction-1").text)
        coop_panel = driver.find_element(By.ID, "prediction-1").text
        assert coop_panel.splitlines()[1:2] == [top] and "%" in coop_panel  # the top class, then each bar's share
        for index in (0, 2):  # zero-shot CLIP and IVLP rendered too
            wait.until(lambda d, index=index: any(name in d.find_element(By.ID, f"prediction-{index}").text
                                                   for name in CLASSNAMES))  # fmt: skip
    finally:
        driver.quit()
        page.close()

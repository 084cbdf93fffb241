"""A live demo: zero-shot CLIP and learned prompts side by side on your images (Gradio).

    python examples/app.py --prompts runs/coop/seed1 runs/promptsrc/seed1 --port 7860
    python examples/app.py --prompts org/coop-flowers102 --examples ../shared/data/oxford_flowers/jpg --port 7860
    python examples/app.py --prompts runs/siglip2-coop/seed1 --native_resolution    # SigLIP 2 NaFlex

Drop or pick an image: every prompt's top-k classes (and zero-shot CLIP's, with the hand-written template on the
same backbone) appear as bars side by side. The class list is editable: prompts that move to new classes (CoOp,
CoCoOp, KgCoOp, MaPLe, PromptSRC, ...) and zero-shot CLIP classify over the edited list; the others keep the classes
they were trained on. Works offline on local prompt folders, on any backbone and method. Each prompt's prediction
is exactly that of `pipeline("image-classification", model=<prompt>)` (with --native_resolution, that of
`pipeline(..., image_processor=AutoImageProcessor.from_pretrained(<its SigLIP 2 backbone>))`).
"""

from __future__ import annotations

from quick_help import answer_at_once

if __name__ == "__main__":
    answer_at_once(__file__)  # --help, misspelt flags, bad values: answered before torch loads

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from coop_hf import PROMPT_MODELS, PromptPreTrainedModel
from coop_hf.cli import run_command
from coop_hf.data import DEFAULT_TEMPLATE
from coop_hf.hub_access import model_load_kwargs
from coop_hf.runners.evaluation import load_prompt_config
from coop_hf.runners.help import parse_flags

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class AppArguments:
    prompts: list[str] = field(metadata={"help": "Saved prompts: local folders or Hub ids (one column each)."})
    port: int = field(default=7860, metadata={"help": "Port of the web app."})
    top_k: int = field(default=5, metadata={"help": "Classes shown per model."})
    examples: str | None = field(
        default=None, metadata={"help": "A folder of images (or one image) offered as examples (a few picked)."}
    )
    num_examples: int = field(default=8, metadata={"help": "How many example images to offer from --examples."})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Zero-shot CLIP's prompt template."})
    share: bool = field(default=False, metadata={"help": "Also serve through a public Gradio link."})
    native_resolution: bool = field(
        default=False,
        metadata={
            "help": "Prompts on a SigLIP 2 NaFlex backbone see each image at its own aspect ratio, through the "
            "backbone's NaFlex image processor (up to its max_num_patches patches), instead of the square crop "
            "they were trained on."
        },
    )


ARGUMENTS = (AppArguments,)


class PromptDemo:
    """The models of the demo and their predictions: one image-classification pipeline per prompt and a
    zero-shot-classification pipeline on the first prompt's backbone."""

    def __init__(
        self,
        prompts: list[str],
        *,
        top_k: int = 5,
        template: str = DEFAULT_TEMPLATE,
        native_resolution: bool = False,
    ):
        if not prompts:
            raise ValueError("Name at least one saved prompt (--prompts DIR_OR_ID ...).")
        if top_k < 1:
            raise ValueError(f"--top_k must be at least 1, got {top_k}.")
        self.top_k, self.template, self.native_resolution = top_k, template, native_resolution
        self.models: dict[str, PromptPreTrainedModel] = {}
        self.pipelines: dict[str, Any] = {}
        clips: dict[str, Any] = {}  # prompts on the same backbone share one copy of it
        for source in prompts:
            config, load_kwargs = load_prompt_config(source, flag="--prompts")
            base = config.base_model_name_or_path
            shared = {"clip_model": clips[base]} if base in clips else {}
            model = PROMPT_MODELS[config.model_type].from_pretrained(source, config=config, **shared, **load_kwargs)
            clips.setdefault(base, model.clip)
            path = Path(source)
            name = f"{model.method_name}: {'/'.join(path.parts[-2:]) if path.exists() else source}"
            self.models[name] = model
            processor = native_image_processor(model, source) if native_resolution else model.image_processor
            self.pipelines[name] = pipeline("image-classification", model=model, image_processor=processor)
        first = self.first
        self.trained_classnames = list(first.config.classnames)
        self.zero_shot = pipeline(
            "zero-shot-image-classification",
            model=first.clip,
            tokenizer=first.tokenizer,
            image_processor=next(iter(self.pipelines.values())).image_processor,
        )
        self.zero_shot_name = f'Zero-shot {first.backbone.display_name} ("{template}")'

    @property
    def first(self) -> PromptPreTrainedModel:
        return next(iter(self.models.values()))

    def set_classnames(self, classnames: list[str]) -> list[str]:
        """Move every prompt that transfers to new classes to `classnames`; notes for those that cannot."""
        notes = []
        for name, model in self.models.items():
            if list(model.config.classnames) == classnames:
                continue
            if model.transfers_to_new_classes and not getattr(model.config, "class_specific_context", False):
                model.set_classnames(classnames)
            else:
                notes.append(f"{name} keeps the {len(model.config.classnames)} classes it was trained on.")
        return notes

    def predict(self, image: Image.Image, classnames: list[str] | None = None) -> dict[str, dict[str, float]]:
        """{model name: {class: probability}} of the top-k classes of each model (zero-shot CLIP first), over
        `classnames` (default: the first prompt's training classes) where a prompt can move to them."""
        classnames = classnames or self.trained_classnames
        self.set_classnames(classnames)
        image = image.convert("RGB")
        ranked = self.zero_shot(image, candidate_labels=classnames, hypothesis_template=self.template)
        results = {self.zero_shot_name: ranked[: self.top_k]}
        for name, classifier in self.pipelines.items():
            results[name] = classifier(image, top_k=self.top_k)
        return {name: {item["label"]: float(item["score"]) for item in entries} for name, entries in results.items()}


def native_image_processor(model: PromptPreTrainedModel, source: str) -> Any:
    """The NaFlex image processor of the prompt's SigLIP 2 backbone (`--native_resolution`): each image resized to
    its own grid of patches, at its aspect ratio; every other backbone is refused."""
    base = model.config.base_model_name_or_path
    if not model.backbone.takes_patches:
        raise ValueError(
            f"--native_resolution applies to prompts on a SigLIP 2 NaFlex backbone; --prompts {source!r} is on "
            f"{model.backbone.display_name} ({base}): drop --native_resolution."
        )
    processor = AutoImageProcessor.from_pretrained(base, **model_load_kwargs(base, flag="--prompts"))
    if getattr(processor, "max_num_patches", None) is None:
        raise ValueError(
            f"--native_resolution: the image processor of {base!r}, the backbone of --prompts {source!r}, is a "
            f"{type(processor).__name__}, not a NaFlex one (Siglip2ImageProcessor): drop --native_resolution."
        )
    return processor


def parse_classnames(text: str) -> list[str]:
    """Class names from the textbox: one per line or comma-separated."""
    separators = text.replace(",", "\n").splitlines()
    names = [name.strip() for name in separators if name.strip()]
    if not names:
        raise gr.Error("Give at least one class name (one per line or comma-separated).")
    return names


def example_images(source: str | None, count: int) -> list[str]:
    """Up to `count` images of a folder (a fixed pick, spread over the folder), or the one image given."""
    if source is None:
        return []
    path = Path(source)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise ValueError(f"--examples {source!r} is neither an image nor a folder.")
    images = sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES)
    return [str(item) for item in random.Random(0).sample(images, min(count, len(images)))]


def build_app(demo: PromptDemo, examples: list[str]) -> gr.Blocks:
    """The Gradio page: image and class list on the left, one bar chart per model on the right."""
    names = [demo.zero_shot_name, *demo.models]
    with gr.Blocks(title="coop-hf: prompts at work") as app:
        gr.Markdown(
            "# coop-hf: learned prompts at work\n"
            f"Backbone `{demo.first.config.base_model_name_or_path}`"
            f"{' (each image at its native aspect ratio)' if demo.native_resolution else ''}. Drop an image: each "
            f"model's top {demo.top_k} classes."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image = gr.Image(type="pil", label="Image", elem_id="image")
                classes = gr.Textbox(
                    value="\n".join(demo.trained_classnames), lines=8, label="Classes (one per line)",
                    elem_id="classes",
                )  # fmt: skip
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                notes = gr.Markdown(elem_id="notes")
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples")
            with gr.Column(scale=3), gr.Row(equal_height=True):  # the models side by side
                labels = [
                    gr.Label(num_top_classes=demo.top_k, label=name, elem_id=f"prediction-{index}", min_width=220)
                    for index, name in enumerate(names)
                ]

        def classify(picture: Image.Image | None, text: str):
            if picture is None:
                raise gr.Error("Drop or pick an image first.")
            classnames = parse_classnames(text)
            messages = demo.set_classnames(classnames)
            predictions = demo.predict(picture, classnames)
            return [predictions[name] for name in names] + ["\n".join(f"- {message}" for message in messages)]

        for trigger in (button.click, image.change):
            trigger(classify, inputs=[image, classes], outputs=[*labels, notes])
    return app


def launch(app: gr.Blocks, *, port: int, share: bool) -> None:
    """Start serving the page (in the background) and say where, naming the flags: Gradio's own lines name its
    Python arguments (`share=True`, `server_port`) instead."""
    try:
        app.launch(server_port=port, share=share, quiet=True, prevent_thread_lock=True)
    except OSError as error:
        raise ValueError(f"--port {port} is taken ({str(error).split('. ')[0]}): pass another --port.") from None
    print(f"* Running on local URL:  {app.local_url}" + ("" if share else " (add --share for a public link)"))


def main(argv: list[str] | None = None) -> gr.Blocks:
    (arguments,) = parse_flags(ARGUMENTS, argv)
    demo = PromptDemo(
        arguments.prompts, top_k=arguments.top_k, template=arguments.template,
        native_resolution=arguments.native_resolution,
    )  # fmt: skip
    app = build_app(demo, example_images(arguments.examples, arguments.num_examples))
    launch(app, port=arguments.port, share=arguments.share)
    app.block_thread()  # until Ctrl-C
    return app


if __name__ == "__main__":
    run_command(main, resumable=False)

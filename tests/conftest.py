"""Shared fixtures: the offline environment, the real CLIP tokenizer and small random CLIP models."""

import math
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP's default spin-waiting makes every parallel op cost ~8 ms on small VMs (see benchmarks/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist (`-n auto`) each worker takes its share of the cores, as do the scripts it runs in subprocesses.
_THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
# One folder per test session for what its processes share (pytest-xdist's workers and the scripts the tests start
# inherit it): the tiny CLIP checkpoint and the cached image features, which stay out of the user's datasets cache.
_OWNS_SESSION_DIR = "COOP_HF_TEST_SESSION_DIR" not in os.environ
if _OWNS_SESSION_DIR:
    os.environ["COOP_HF_TEST_SESSION_DIR"] = tempfile.mkdtemp(prefix="coop-hf-tests-")
SESSION_DIR = os.environ["COOP_HF_TEST_SESSION_DIR"]
os.environ["HF_DATASETS_CACHE"] = os.path.join(SESSION_DIR, "datasets")

import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402
from transformers import AutoTokenizer, CLIPConfig, CLIPModel  # noqa: E402

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(_THREADS)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIP_CONFIGS = SHARED / "clip-configs"
VIT_B32 = CLIP_CONFIGS / "clip-vit-base-patch32"
TINYCLIP = CLIP_CONFIGS / "tinyclip-vit-8m-16-text-3m"
DATA = SHARED / "data"
sys.path.insert(0, str(REPO / "examples"))  # the scripts import examples/quick_help.py, as when run from there


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (torch, transformers, every test module) out of the garbage collector's sight:
    `Trainer.train` runs a full `gc.collect()` (accelerate's `free_memory`), which otherwise walks those millions
    of objects at every run."""
    gc.freeze()


def tiny_clip_config(eos_token_id: int = 2, **text_overrides) -> CLIPConfig:
    """A two-layer CLIP with the real 49,408-token vocabulary, so the real BPE tokenizer fits it."""
    text_config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        eos_token_id=eos_token_id,
    )
    text_config.update(text_overrides)
    vision_config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
    )
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)


def random_clip(config: CLIPConfig, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


@pytest.fixture(scope="session")
def clip_tokenizer():
    return AutoTokenizer.from_pretrained(VIT_B32)


@pytest.fixture(scope="session")
def tiny_clip_dir(clip_tokenizer) -> Path:
    """A from_pretrained-able checkpoint folder of a tiny random CLIP with the real tokenizer and processor, written
    once per test session at one path, so that every worker's runs share their cached image features."""
    from transformers import CLIPImageProcessor

    folder = Path(SESSION_DIR) / "tiny-clip"
    with FileLock(f"{folder}.lock"):
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(dir=SESSION_DIR))
            random_clip(tiny_clip_config()).save_pretrained(staging)
            clip_tokenizer.save_pretrained(staging)
            CLIPImageProcessor.from_pretrained(VIT_B32).save_pretrained(staging)
            staging.rename(folder)
    return folder


def pytest_sessionfinish(session):
    if _OWNS_SESSION_DIR and "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def clip_and_tokenizer(clip_tokenizer):
    """A tiny random CLIP whose logit scale is the pretrained CLIP's 100, which reference code often writes as a
    constant, and the real tokenizer."""
    clip = random_clip(tiny_clip_config())
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
    return clip, clip_tokenizer


@pytest.fixture(scope="session")
def vit_b32_clip() -> CLIPModel:
    """The real ViT-B/32 architecture (151M parameters) with random weights."""
    return random_clip(CLIPConfig.from_pretrained(VIT_B32))


@pytest.fixture(scope="module", params=["clip", "metaclip_2"])
def clip_like_backbone(request):
    """(family, model, tokenizer) of the families with CLIP's layout (causal text tower, class-token pooling), where
    the deep-prompt methods apply."""
    from tiny_backbones import tiny_backbone

    family = request.param
    model, tokenizer = tiny_backbone(family, random_clip(tiny_clip_config()) if family == "clip" else None)
    return family, model, tokenizer


def load_example(name: str):
    """The module of `examples/<name>.py` (registered in `sys.modules`, as its dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def transformers_logs(caplog):
    """caplog, with transformers' log records (which do not propagate by default) reaching it."""
    import transformers

    transformers.utils.logging.enable_propagation()
    try:
        yield caplog
    finally:
        transformers.utils.logging.disable_propagation()


def random_image_dataset(folder: Path, classnames: list[str], count: int = 12):
    """`count` random 50 x 40 PNG images in `folder`, labelled round-robin over `classnames`, as a `datasets`
    image-classification dataset."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"image_{index}.png"
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype("uint8")).save(path)
        paths.append(str(path))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classnames)})
    labels = [index % len(classnames) for index in range(count)]
    return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features)


def flowers_split() -> dict[str, list]:
    """CoOp's split file of the shared Flowers102: train, val and test lists of [image, label, class name]."""
    return json.loads((DATA / "oxford_flowers" / "split_zhou_OxfordFlowers.json").read_text())


def flowers_with_garbage(folder: Path, broken: set[str]) -> Path:
    """`folder` holding the shared Flowers102 as symlinks, with the images of `broken` (split-file names) replaced by
    bytes no image reader takes."""
    source = DATA / "oxford_flowers"
    (folder / "oxford_flowers" / "jpg").mkdir(parents=True)
    for item in source.iterdir():
        if item.name != "jpg":
            (folder / "oxford_flowers" / item.name).symlink_to(item)
    for image in (source / "jpg").iterdir():
        target = folder / "oxford_flowers" / "jpg" / image.name
        target.write_bytes(b"not a jpeg") if image.name in broken else target.symlink_to(image)
    return folder

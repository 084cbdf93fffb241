"""Backbone image features computed once and cached on disk, so CoOp trains on `image_embeds` instead of pixels.

The backbone is frozen in CoOp, so an image's feature depends only on the image, its augmentation and the vision
weights: only methods that leave the image tower untouched (`PromptPreTrainedModel.image_tower_frozen`) may use
these features. `encode_images` runs the image encoder over N seeded augmented views of every image (or the one test
view) and caches the result as a `datasets.Dataset` under a key of everything it depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.features.features import FeatureType
from datasets.utils import tqdm
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from .backbones import Backbone, backbone_for
from .data.transforms import RRC_SCALE, CoOpTransform

CACHE_FORMAT_VERSION = 1
CACHE_SUBDIR = "coop_hf_image_features"
PROCESSOR_KEYS = (
    "size", "crop_size", "image_mean", "image_std", "resample", "do_resize", "do_center_crop", "do_rescale",
    "rescale_factor", "do_normalize", "do_convert_rgb",
)  # fmt: skip
"""Image processor settings that change the pixels `CoOpTransform` produces."""
FINGERPRINT_SAMPLES = 64
"""Values sampled (evenly strided) from each vision weight tensor for the model fingerprint."""


class AugmentedViews(torch.utils.data.Dataset):
    """`num_views` transformed views of every image of `dataset` (columns "image" and "label"): views `first_view`,
    `first_view + 1`, ...

    Item `v * len(dataset) + index` is view `first_view + v` of image `index`, with torch's RNG seeded from
    (`seed`, view, index) while the transform runs: the same settings give the same views, in any order, batch
    size or number of DataLoader workers. Items are dicts of "pixel_values" [3, H, W], "labels", "view", "index".
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: CoOpTransform,
        num_views: int = 1,
        seed: int = 0,
        first_view: int = 0,
    ):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}.")
        missing = {"image", "label"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"The dataset needs columns 'image' and 'label'; it lacks {sorted(missing)}.")
        dataset = dataset.with_format(None).select_columns(["image", "label"])  # raw rows, whatever transform is set
        if isinstance(dataset.features["image"], datasets.Image):
            # `load_rgb` decodes, so that an unreadable file is reported by name.
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        self.dataset, self.transform, self.num_views, self.seed = dataset, transform, num_views, seed
        self.first_view = first_view

    def __len__(self) -> int:
        return self.num_views * len(self.dataset)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor | int]:
        view, index = divmod(item, len(self.dataset))
        view += self.first_view
        row = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator the transform draws from: `torch.manual_seed` would also reseed (for good, as
            # `fork_rng(devices=[])` restores only the CPU state) every accelerator's generator.
            torch.default_generator.manual_seed(view_seed(self.seed, view, index))
            batch = self.transform({"image": [row["image"]], "label": [row["label"]]})
        return {"pixel_values": batch["pixel_values"][0], "labels": int(row["label"]), "view": view, "index": index}


def view_seed(seed: int, view: int, index: int) -> int:
    """The torch seed of one view of one image: well mixed, so neighbouring images get unrelated crops."""
    return int(np.random.SeedSequence([seed, view, index]).generate_state(1, dtype=np.uint64)[0])


def encode_images(
    clip: PreTrainedModel | Backbone,
    dataset: datasets.Dataset,
    transform: CoOpTransform,
    *,
    num_views: int = 1,
    seed: int = 0,
    first_view: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> datasets.Dataset:
    """Image features of `num_views` augmented views of each image (or the single view of a test transform).

    Returns a `datasets.Dataset` (torch format) with columns "image_embeds" (float32, projection_dim),
    "labels", "view" and "index" (the row in `dataset`); rows are view-major, so view `first_view + v` of every
    image is the row range [v * len(dataset), (v + 1) * len(dataset)). Views are seeded one by one, so views
    10-29 encoded apart are the views 10-29 of 30 encoded at once. Train with `model(image_embeds=..., labels=...)`.

    With `use_cache`, the result is stored in `cache_dir` (default: `coop_hf_image_features` in
    `datasets.config.HF_DATASETS_CACHE`) under a key of the model (name and a fingerprint of the vision
    weights), the data (`dataset._fingerprint`), the transform settings, `num_views` and `seed`; a later call
    with the same key loads it without encoding.
    The model should be in eval mode (as the prompt models keep it).
    """
    if not transform.train and num_views != 1:
        raise ValueError(f"The test transform is deterministic: use num_views=1, not {num_views}.")
    if not use_cache:
        views = AugmentedViews(dataset, transform, num_views=num_views, seed=seed, first_view=first_view)
        return _encode(clip, views, batch_size, num_workers).with_format("torch")
    root = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE) / CACHE_SUBDIR
    target = root / feature_cache_key(clip, dataset, transform, num_views=num_views, seed=seed, first_view=first_view)
    if not target.is_dir():
        views = AugmentedViews(dataset, transform, num_views=num_views, seed=seed, first_view=first_view)
        features = _encode(clip, views, batch_size, num_workers)
        _save_atomically(features, target)
    return datasets.load_from_disk(str(target)).with_format("torch")


def feature_cache_key(
    clip: PreTrainedModel | Backbone,
    dataset: datasets.Dataset,
    transform: CoOpTransform,
    *,
    num_views: int,
    seed: int,
    first_view: int = 0,
) -> str:
    """Hex digest of everything the cached features depend on."""
    processor = transform.image_processor
    description = {
        "version": CACHE_FORMAT_VERSION,
        "model": {"name_or_path": backbone_for(clip).model.name_or_path, "vision_weights": vision_fingerprint(clip)},
        "data": dataset._fingerprint,
        "transform": {
            "class": type(transform).__qualname__,
            "version": transform.version,
            "train": transform.train,
            **({"crop_scale": list(transform.crop_scale)} if transform.crop_scale != RRC_SCALE else {}),
            "processor": {key: getattr(processor, key, None) for key in PROCESSOR_KEYS},
        },
        "num_views": num_views,
        "seed": seed,
        **({"first_view": first_view} if first_view else {}),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:32]


def vision_fingerprint(clip: PreTrainedModel | Backbone) -> str:
    """Cheap fingerprint of the vision tower and projection: names, shapes, dtypes and a strided sample of
    `FINGERPRINT_SAMPLES` values of every tensor (a fine-tuned or different checkpoint changes the samples)."""
    digest = hashlib.sha256()
    modules = backbone_for(clip).vision_modules()
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES]
            digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(sample.to(device="cpu", dtype=torch.float64).numpy().tobytes())
    return digest.hexdigest()


def _encode(
    clip: PreTrainedModel | Backbone, views: AugmentedViews, batch_size: int, num_workers: int
) -> datasets.Dataset:
    loader = DataLoader(views, batch_size=batch_size, num_workers=num_workers)
    backbone = backbone_for(clip)
    parameter = next(backbone.vision_model.parameters())
    columns: dict[str, list[np.ndarray]] = {"image_embeds": [], "labels": [], "view": [], "index": []}
    description = f"Encoding {views.num_views} view(s) of {len(views.dataset)} images"
    with torch.no_grad(), tqdm(total=len(views), desc=description, unit="img") as progress:
        for batch in loader:
            pixel_values = batch.pop("pixel_values").to(parameter.device, parameter.dtype)
            embeds = backbone.image_features(pixel_values)
            columns["image_embeds"].append(embeds.float().cpu().numpy())
            for key, values in batch.items():
                columns[key].append(values.numpy())
            progress.update(len(pixel_values))
    columns = {key: np.concatenate(parts) for key, parts in columns.items()}
    return _features_dataset(columns, views.dataset.features["label"])


def _features_dataset(columns: dict[str, np.ndarray], label_feature: FeatureType) -> datasets.Dataset:
    embeds = columns["image_embeds"]
    features = datasets.Features(
        {
            "image_embeds": datasets.List(datasets.Value("float32"), length=embeds.shape[1]),
            "labels": label_feature if isinstance(label_feature, datasets.ClassLabel) else datasets.Value("int64"),
            "view": datasets.Value("int32"),
            "index": datasets.Value("int64"),
        }
    )
    table = pa.table(
        {
            "image_embeds": pa.FixedSizeListArray.from_arrays(pa.array(embeds.reshape(-1)), embeds.shape[1]),
            "labels": pa.array(columns["labels"].astype(np.int64)),
            "view": pa.array(columns["view"].astype(np.int32)),
            "index": pa.array(columns["index"].astype(np.int64)),
        },
        schema=features.arrow_schema,
    )
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features))


def _save_atomically(features: datasets.Dataset, target: Path) -> None:
    """Write to a temporary sibling folder and rename it into place: `target` exists only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        features.save_to_disk(str(staging))
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():  # not another process having finished the same cache first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""CoOp's image transforms: the geometry in PIL, rescaling and normalisation by the base model's processor.

Train: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, torchvision's sampling) + horizontal flip (p=0.5).
Test: resize the shorter side (or to a fixed size) + centre crop, pixel for pixel as the reference's torchvision
``Resize`` + ``CenterCrop`` (whose crop offset rounds half to even, where the image processors floor).
Randomness comes from torch's global RNG (so ``torch.manual_seed`` and DataLoader worker seeding apply), or, with a
``seed``, from a generator per sample seeded by (seed, epoch, sample index): then every view is the same whatever
the number of processes or DataLoader workers that draw it.
"""

from __future__ import annotations

import math
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor

from .images import load_rgb
from .records import CLEAN_LABEL

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROBABILITY = 0.5
SAMPLE_INDEX = "sample_index"
"""The column of each training image's position in its split, which seeds its augmentation (`with_coop_transform`)."""
CLEAN_LABELS = "clean_labels"
"""The batch key of each image's true class, from a split's `clean_label` column (label-noise studies)."""


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one training image's augmentation in one epoch, from (seed, epoch, index) alone."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Sample a crop as torchvision's ``RandomResizedCrop.get_params``: (top, left, crop_height, crop_width).

    Ten attempts at a random area and log-uniform aspect ratio, then a centre crop clamped to ``ratio``. Draws from
    `generator`, else from torch's global RNG (as torchvision).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - crop_width + 1, size=(1,), generator=generator).item())
            return top, left, crop_height, crop_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_width, crop_height = int(round(height * max(ratio))), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def center_crop_offset(size: int, crop: int) -> int:
    """Offset of a centre crop of ``crop`` pixels along a side of ``size``, as torchvision's ``CenterCrop``.

    The offset is ``(size - crop) / 2`` rounded half to even (Python's ``round``), so it differs from floor
    division when ``size - crop`` is 3 mod 4. A crop larger than the side is padded evenly, the extra pixel after.
    """
    if size < crop:
        return -((crop - size) // 2)
    return round((size - crop) / 2)


def _size_entry(size: Any, key: str) -> int | None:
    return size.get(key) if size is not None else None


class CoOpTransform:
    """Batch transform for ``Dataset.set_transform`` / ``with_transform``.

    Maps ``{"image": [...], "label": [...]}`` to ``{"pixel_values": FloatTensor[B, 3, H, W],
    "labels": LongTensor[B]}`` (with ``clean_labels``, also ``"clean_labels"`` from the batch's ``clean_label``
    column, for `CoOpTrainer`'s gradient flow). Output size, resampling filter, mean and std come from
    ``image_processor`` (its ``crop_size``, its ``size`` for the test-time resize). Every image goes through
    ``load_rgb``. With a ``seed`` (training), each image's crop and flip come from `sample_generator(seed, epoch,
    index)`, the index from the batch's ``sample_index`` column and ``epoch`` set before each epoch (`CoOpTrainer`
    does). ``crop_scale`` is the random crop's area range (Dassl's and torchvision's (0.08, 1); Tip-Adapter and
    LP++ crop (0.5, 1)).
    """

    version = 2
    """Bumped whenever the pixels of a view change (2: centre crop rounded as torchvision), to renew feature caches."""

    def __init__(
        self,
        image_processor: BaseImageProcessor,
        train: bool,
        clean_labels: bool = False,
        seed: int | None = None,
        crop_scale: tuple[float, float] = RRC_SCALE,
    ) -> None:
        self.image_processor = image_processor
        self.train = train
        self.crop_scale = tuple(crop_scale)
        self.clean_labels = clean_labels
        self.seed = seed
        self.epoch = 0
        self.resample = Image.Resampling(int(image_processor.resample))
        size, crop = image_processor.size, image_processor.crop_size
        self.shortest_edge = _size_entry(size, "shortest_edge")
        self.resize_to = (_size_entry(size, "height"), _size_entry(size, "width"))
        if image_processor.do_center_crop:
            self.output_size = (_size_entry(crop, "height"), _size_entry(crop, "width"))
        else:
            self.output_size = self.resize_to
        if None in self.output_size or (self.shortest_edge is None and None in self.resize_to):
            raise ValueError(
                f"{type(image_processor).__name__} must resize to a shortest edge or a fixed height and "
                f"width, and centre-crop or resize to a fixed size; got size={size}, crop_size={crop}"
            )

    def train_geometry(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        """Random resized crop to the output size, then a random horizontal flip (drawn from `generator`, else the
        global RNG)."""
        top, left, crop_height, crop_width = random_resized_crop_box(
            image.width, image.height, self.crop_scale, generator=generator
        )
        out_height, out_width = self.output_size
        image = image.crop((left, top, left + crop_width, top + crop_height))
        image = image.resize((out_width, out_height), self.resample)
        if torch.rand(1, generator=generator).item() < FLIP_PROBABILITY:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def test_geometry(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side (long side truncated) or to the fixed size, then centre-crop as torchvision does."""
        if self.shortest_edge is not None:
            short, long = sorted((image.width, image.height))
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_width, new_height = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
        else:
            new_height, new_width = self.resize_to
        image = image.resize((new_width, new_height), self.resample)
        out_height, out_width = self.output_size
        top, left = center_crop_offset(image.height, out_height), center_crop_offset(image.width, out_width)
        return image.crop((left, top, left + out_width, top + out_height))

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        if not self.train:
            images = [self.test_geometry(load_rgb(image)) for image in batch["image"]]
        elif self.seed is None:
            images = [self.train_geometry(load_rgb(image)) for image in batch["image"]]
        else:
            images = [
                self.train_geometry(load_rgb(image), sample_generator(self.seed, self.epoch, index))
                for image, index in zip(batch["image"], batch[SAMPLE_INDEX], strict=True)
            ]
        processed = self.image_processor(images=images, do_resize=False, do_center_crop=False, return_tensors="pt")
        labels = torch.as_tensor(batch["label"], dtype=torch.long)
        outputs = {"pixel_values": processed["pixel_values"], "labels": labels}
        if self.clean_labels:
            outputs[CLEAN_LABELS] = torch.as_tensor(batch[CLEAN_LABEL], dtype=torch.long)
        return outputs


def with_coop_transform(
    dataset: datasets.Dataset,
    image_processor: BaseImageProcessor,
    *,
    train: bool,
    clean_labels: bool = False,
    seed: int | None = None,
) -> datasets.Dataset:
    """Return ``dataset`` yielding ``pixel_values``/``labels`` through ``CoOpTransform`` on access; with
    ``clean_labels``, also ``clean_labels`` from its ``clean_label`` column (label-noise studies: the true class of
    each image, which `CoOpTrainer` needs for `--gradient_flow`). With a ``seed`` (training), each image's
    augmentation is seeded by (seed, epoch, its position): the result's ``coop_transform`` is the transform whose
    ``epoch`` `CoOpTrainer` sets before each epoch.

    The image column is cast to ``Image(decode=False)`` so that ``load_rgb`` does the decoding and an
    unreadable file is reported by name.
    """
    columns = ["image", "label"]
    if clean_labels:
        if CLEAN_LABEL not in dataset.column_names:
            raise ValueError(
                f"clean_labels=True needs a {CLEAN_LABEL!r} column (the true class of each image), which label-noise "
                "injection adds (--noise_rate above 0); the dataset has only "
                f"{', '.join(dataset.column_names)}."
            )
        columns.append(CLEAN_LABEL)
    undecoded = dataset.cast_column("image", datasets.Image(decode=False))
    seed = seed if train else None
    if seed is not None:
        undecoded = undecoded.add_column(SAMPLE_INDEX, list(range(len(undecoded))))
        columns.append(SAMPLE_INDEX)
    transform = CoOpTransform(image_processor, train=train, clean_labels=clean_labels, seed=seed)
    transformed = undecoded.with_transform(transform, columns=columns)
    transformed.coop_transform = transform
    return transformed

"""Data layer of coop_hf: CoOp benchmarks, Hub datasets, few-shot sampling, transforms and checks."""

from .benchmarks import BENCHMARKS, BenchmarkSpec, get_benchmark, load_benchmark, read_benchmark
from .classnames import ClassnameFixes
from .few_shot import build_few_shot_splits, few_shot_indices, sample_few_shot
from .hub_datasets import load_dataset_splits, load_image_classification
from .images import UnreadableImageError, load_rgb
from .records import CLEAN_LABEL, column_values
from .split_zhou import read_split_zhou, split_file_classnames
from .subsample import subsample_classes
from .templates import (
    BENCHMARK_TEMPLATES,
    DEFAULT_TEMPLATE,
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    ensemble_templates,
    templates_for,
)
from .transforms import CLEAN_LABELS, CoOpTransform, random_resized_crop_box, with_coop_transform
from .validation import check_classnames_match, check_images

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_TEMPLATES",
    "CLEAN_LABEL",
    "CLEAN_LABELS",
    "DEFAULT_TEMPLATE",
    "IMAGENET_TEMPLATES",
    "IMAGENET_TEMPLATES_SELECT",
    "BenchmarkSpec",
    "ClassnameFixes",
    "CoOpTransform",
    "UnreadableImageError",
    "build_few_shot_splits",
    "check_classnames_match",
    "check_images",
    "column_values",
    "ensemble_templates",
    "few_shot_indices",
    "get_benchmark",
    "load_benchmark",
    "load_dataset_splits",
    "load_image_classification",
    "load_rgb",
    "random_resized_crop_box",
    "read_benchmark",
    "read_split_zhou",
    "sample_few_shot",
    "split_file_classnames",
    "subsample_classes",
    "templates_for",
    "with_coop_transform",
]

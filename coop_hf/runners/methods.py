"""The methods the command line knows: the baselines, and one entry per prompt-learning method."""

from __future__ import annotations

from ..methods.class_tokens import ClassTokenTuningModel
from ..methods.classifier import LinearClassifierModel
from ..methods.cocoop import CoCoOpModel
from ..methods.coop import CoOpModel
from ..methods.kgcoop import KgCoOpModel
from ..methods.prograd import ProGradModel
from ..methods.prograd.trainer import ProGradTrainer
from ..methods.tenc_ft import TextEncoderFineTuningModel
from .prompt_learning import PromptLearning

BASELINES = ("zeroshot", "linear-probe")

PROMPT_METHODS: dict[str, PromptLearning] = {
    method.name: method
    for method in (
        PromptLearning("coop", CoOpModel),
        PromptLearning("cocoop", CoCoOpModel, recipe={"per_device_train_batch_size": 1, "num_train_epochs": 10}),
        PromptLearning("kgcoop", KgCoOpModel, recipe={"per_device_train_batch_size": 128, "num_train_epochs": 100}),
        PromptLearning("prograd", ProGradModel, ProGradTrainer),
        PromptLearning("full-prompt", ClassTokenTuningModel, label="Full-Prompt-Tuning"),
        PromptLearning(
            "cls-tuning",
            ClassTokenTuningModel,
            settings={"learn_context": False},
            label="CLS-Tuning",
            defaults={"ctx_init": "a photo of a"},
        ),
        PromptLearning("classifier-r", LinearClassifierModel, settings={"init": "random"}, label="Classifier-R"),
        PromptLearning("classifier-c", LinearClassifierModel, settings={"init": "text"}, label="Classifier-C"),
        PromptLearning("tenc-ft", TextEncoderFineTuningModel, label="TEnc-FT"),
    )
}
"""Prompt-learning methods by `--method` name: the model class each trains (and its trainer, if not CoOp's)."""

METHOD_NAMES = (*BASELINES, *PROMPT_METHODS)

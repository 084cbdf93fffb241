"""The CoOp training recipe on `transformers.Trainer`: SGD on the context only, one constant warm-up epoch, then
cosine decay by epoch, exactly as the reference schedule steps it."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import ClassLabel
from transformers import Trainer, TrainerCallback, TrainingArguments

from . import gradient_flow
from .atomic import atomic_write_text
from .data import CLEAN_LABEL, CLEAN_LABELS, check_classnames_match
from .hub import render_model_card
from .metrics import ClassificationAccuracy
from .modeling_utils import PromptModelOutput

NO_CLEAN_LABELS = (
    "--gradient_flow tells clean from noisy training samples by each batch's clean_labels, from the split's "
    "clean_label column, which label-noise injection adds: train with --noise_rate above 0, or drop --gradient_flow "
    "(Trainer users: with_coop_transform(split, processor, train=True, clean_labels=True))."
)


@dataclass
class CoOpTrainingArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the CoOp recipe (SGD lr 0.002, momentum 0.9, weight decay 5e-4,
    batch 32, one warm-up epoch at constant lr 1e-5 then cosine decay by epoch).

    `num_train_epochs` left at None means the reference schedule for the shot count (see `reference_epochs`);
    the recipe resolves it before training.
    """

    learning_rate: float = field(default=0.002, metadata={"help": "Peak SGD learning rate (CoOp: 0.002)."})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay (CoOp: 5e-4)."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (CoOp: 0.9)."})
    warmup_epochs: int = field(default=1, metadata={"help": "Epochs at the constant warm-up learning rate."})
    warmup_lr: float = field(default=1e-5, metadata={"help": "Constant learning rate of the warm-up epochs."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=100, metadata={"help": "Evaluation batch size per device."})
    num_train_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Epochs; default: the reference schedule by shots (1: 50, 2-4: 100, 8-16: 200, ImageNet: 50)."
        },
    )
    cached_views: int = field(
        default=0,
        metadata={
            "help": "Train from cached CLIP features of N seeded augmented views per image (an epoch then passes over "
            "all N views, and the default epoch count is divided by N); 0: augment every batch (the reference)."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns: images are transformed lazily into pixel_values."},
    )
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Clip gradients to this norm; 0 (the default, as CoOp): no clipping."}
    )
    keep_last_batch: bool = field(
        default=False,
        metadata={
            "help": "Keep the last incomplete training batch of an epoch. Default (the reference): drop it when the "
            "split holds at least one full batch."
        },
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin DataLoader memory; default: only when a CUDA device is used."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an --output_dir that holds a run of another configuration (removes its results, "
            "prompts and checkpoints)."
        },
    )
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch (a few KB each)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    logging_strategy: str = field(
        default="epoch", metadata={"help": "Log the training loss every epoch (default) or every --logging_steps."}
    )
    logging_steps: float = field(default=10, metadata={"help": "With --logging_strategy steps: log every N steps."})
    gradient_flow: bool = field(
        default=False,
        metadata={
            "help": "Record every step the mean norm of the per-sample loss gradients w.r.t. the trained parameters, "
            "for the clean and the noisy samples apart (needs the clean_label column that label-noise injection adds: "
            "--noise_rate above 0), in the logs and output_dir/gradient_flow.json. Costs one more forward pass per "
            "batch and one backward pass per image; checkpoints keep one log entry per step."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = torch.cuda.is_available() and not self.use_cpu

    @property
    def global_train_batch_size(self) -> int:
        """Images per optimizer step over all processes (before gradient accumulation)."""
        return self.per_device_train_batch_size * max(self.world_size, 1)

    def drops_last_batch(self, num_train_images: int) -> bool:
        """Dassl's rule: drop an epoch's last incomplete batch when the split holds at least one full batch."""
        return not self.keep_last_batch and num_train_images >= self.global_train_batch_size


def reference_epochs(shots: int, dataset: str | None = None) -> int:
    """CoOp's epochs by shot count: 1 shot 50, 2-4 shots 100, 8-16 shots 200; ImageNet 50 at every shot count."""
    if dataset is not None and dataset.startswith("imagenet"):
        return 50
    if shots <= 1:
        return 50
    return 100 if shots <= 4 else 200


def warmup_cosine_factor(epoch: int, *, total_epochs: int, warmup_epochs: int, warmup_ratio: float) -> float:
    """Learning-rate factor of an epoch: `warmup_ratio` (warm-up lr / lr) during warm-up, then cosine from 1.

    The reference wraps a cosine schedule over all epochs and starts stepping it only after the warm-up, so the
    first epoch after warm-up runs at the full learning rate and epoch e at 0.5 (1 + cos(pi (e - w) / E)).
    """
    if epoch < warmup_epochs:
        return warmup_ratio
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / total_epochs))


class CoOpTrainer(Trainer):
    """`Trainer` with the CoOp optimizer (SGD over the prompt parameters only) and schedule, and checkpoints and
    Hub pushes that hold the prompt and its model card, never CLIP's weights.

    Batches may carry `clean_labels` (each image's true class, from a `clean_label` column): the model never sees
    them; with `args.gradient_flow` every step records the clean and noisy samples' mean per-sample gradient norm
    (`coop_hf.gradient_flow`).

    Example:

    ```python
    >>> args = CoOpTrainingArguments(output_dir="coop-noisy", num_train_epochs=50, gradient_flow=True)
    >>> train = with_coop_transform(noisy_train, processor, train=True, clean_labels=True)  # has a clean_label column
    >>> trainer = CoOpTrainer(model=model, args=args, train_dataset=train)
    >>> trainer.train()  # coop-noisy/gradient_flow.json: every step's clean and noisy mean gradient norm
    ```
    """

    args: CoOpTrainingArguments
    uses_loss = True
    """Its update follows the gradient of a loss (so `--loss gce` may replace cross-entropy)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._flow_window: list[dict[str, Any]] = []  # batch entries since the last log
        if getattr(self.train_dataset, "coop_transform", None) is not None:
            if self.args.dataloader_persistent_workers:
                raise ValueError(
                    "The training images' augmentation is seeded per epoch, which persistent DataLoader workers would "
                    "never see change: drop --dataloader_persistent_workers."
                )
            self.add_callback(_AugmentationEpoch(self))

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        """The model card's hyperparameter rows of a run with these arguments."""
        return {
            "epochs": epochs,
            "optimizer": f"SGD lr {args.learning_rate}, momentum {args.momentum}, weight decay {args.weight_decay}",
            "schedule": f"{args.warmup_epochs} warm-up epoch(s) at lr {args.warmup_lr}, then cosine",
            "batch size": args.global_train_batch_size,
        }

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            prompt_parameters = [param for param in model.parameters() if param.requires_grad]
            self.optimizer = torch.optim.SGD(
                prompt_parameters,
                lr=self.args.learning_rate,
                momentum=self.args.momentum,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            steps_per_epoch = max(len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps, 1)
            total_epochs = max(math.ceil(num_training_steps / steps_per_epoch), 1)

            def factor(step: int) -> float:
                return warmup_cosine_factor(
                    step // steps_per_epoch,
                    total_epochs=total_epochs,
                    warmup_epochs=self.args.warmup_epochs,
                    warmup_ratio=self.args.warmup_lr / self.args.learning_rate,
                )

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return self.lr_scheduler

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """`optimization_step`, after recording the batch's gradient flow with `args.gradient_flow`. A batch's
        `clean_labels` never reach the model."""
        clean_labels = inputs.pop(CLEAN_LABELS, None)
        if self.args.gradient_flow:
            self.record_gradient_flow(model, inputs, clean_labels)
        return self.optimization_step(model, inputs, num_items_in_batch)

    def optimization_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """A batch's forward and backward pass (`Trainer.training_step`); methods with their own update override it."""
        return super().training_step(model, inputs, num_items_in_batch)

    def record_gradient_flow(
        self, model: torch.nn.Module, inputs: dict[str, Any], clean_labels: torch.Tensor | None
    ) -> None:
        """Log the batch's mean per-sample gradient norms of its clean and noisy samples (`coop_hf.gradient_flow`)
        in `state.log_history`, without touching the gradients of the step: one more forward pass of the batch, then
        one backward pass per sample of its data loss."""
        if clean_labels is None:
            raise ValueError(NO_CLEAN_LABELS)
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        unwrapped = self.accelerator.unwrap_model(model)
        unwrapped.train()
        parameters = [parameter for parameter in unwrapped.parameters() if parameter.requires_grad]
        # fp16 autocast: scale the losses as the step's own backward does, so that small gradients do not underflow.
        scale = self.accelerator.scaler.get_scale() if self.accelerator.scaler is not None else 1.0
        with self.compute_loss_context_manager():
            logits = unwrapped(**{key: value for key, value in inputs.items() if key != "labels"})["logits"]
            losses = [scale * self.sample_loss(logits[index : index + 1], labels[index : index + 1])
                      for index in range(len(labels))]  # fmt: skip
            norms = gradient_flow.per_sample_gradient_norms(losses, parameters) / scale
        clean = clean_labels.to(norms.device) == labels
        norms, clean = self.accelerator.gather_for_metrics((norms, clean))
        entry = gradient_flow.batch_entry(norms, clean)
        self._flow_window.append(entry)
        # Straight into the history (checkpointed with the state), not through `log`, which would print every step.
        self.state.log_history.append({"epoch": self.state.epoch, "step": self.state.global_step + 1, **entry})

    def sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The data loss of one sample: `compute_loss_func` (e.g. GCE) when the Trainer has one, else
        cross-entropy (every method's data term; regularisers that do not depend on the sample are left out)."""
        if self.compute_loss_func is not None:
            return self.compute_loss_func(PromptModelOutput(logits=logits), labels)
        return F.cross_entropy(logits.float(), labels)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """`Trainer.log`, adding to the training logs the clean and noisy samples' mean gradient norms since the last
        log (`grad_norm_clean`, `grad_norm_noisy`) with `args.gradient_flow`. A run resumed from its final
        checkpoint took no step, so its summary carries no `train_loss` (Trainer would report 0)."""
        if "train_loss" in logs and self.state.global_step == getattr(self, "_initial_global_step", None):
            logs = {key: value for key, value in logs.items() if key != "train_loss"}
        if "loss" in logs and self._flow_window:
            pooled = gradient_flow.pool(self._flow_window)
            means = {f"grad_norm_{name}": pooled[name] for name in ("clean", "noisy")}
            logs = logs | {key: value for key, value in means.items() if value is not None}
            self._flow_window = []
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        """`Trainer.prediction_step`, without the batch's `clean_labels` (a noisy split evaluated)."""
        inputs = {key: value for key, value in inputs.items() if key != CLEAN_LABELS}
        return super().prediction_step(model, inputs, *args, **kwargs)

    def get_train_dataloader(self):
        """Trainer's training DataLoader, dropping the last incomplete batch as `args.drops_last_batch` says
        (`dataloader_drop_last` would apply to evaluation too, where no image may be dropped)."""
        drop_last = self.args.drops_last_batch(len(self.train_dataset))
        with _temporarily(self.args, dataloader_drop_last=drop_last):
            return super().get_train_dataloader()

    def train(self, *args, **kwargs):
        """`Trainer.train`, after checking that the training set's class list is the model's; with
        `args.gradient_flow`, then writes the gradient flow of every step to `output_dir/gradient_flow.json`."""
        self.check_dataset_classes(self.train_dataset)
        self._flow_window = []
        columns = getattr(self.train_dataset, "column_names", None)
        if self.args.gradient_flow and columns is not None and not {CLEAN_LABEL, CLEAN_LABELS} & set(columns):
            raise ValueError(NO_CLEAN_LABELS)
        output = super().train(*args, **kwargs)
        if self.args.gradient_flow and self.args.should_save:
            path = Path(self.args.output_dir) / gradient_flow.GRADIENT_FLOW_FILE
            atomic_write_text(path, json.dumps(gradient_flow.report(self.state.log_history), indent=2) + "\n")
        return output

    def evaluate(self, eval_dataset=None, *args, **kwargs) -> dict[str, float]:
        """`Trainer.evaluate`, after checking that the evaluation set's class list is the model's."""
        self.check_dataset_classes(eval_dataset if eval_dataset is not None else self.eval_dataset)
        return super().evaluate(eval_dataset, *args, **kwargs)

    def check_dataset_classes(self, dataset) -> None:
        """Raise a `ValueError` naming the first differing class when a dataset with a `ClassLabel` "label" (or
        "labels") column does not have the model's class list (its label ids would mean other classes)."""
        features = getattr(dataset, "features", None) or {}
        label = features.get("label", features.get("labels"))
        if isinstance(label, ClassLabel):
            model = self.accelerator.unwrap_model(self.model)
            check_classnames_match(label.names, model.config.classnames)

    def create_model_card(self, *args, **kwargs) -> None:
        """Write the CoOp model card (Trainer's generic card would overwrite it before a Hub push)."""
        if self.is_world_process_zero():
            model = self.accelerator.unwrap_model(self.model)
            path = Path(self.args.output_dir) / "README.md"
            atomic_write_text(path, render_model_card(model.card_info(), repo_id=self.args.hub_model_id))


class _AugmentationEpoch(TrainerCallback):
    """Sets the epoch of a seeded training transform (`with_coop_transform(..., seed=...)`) before each epoch's
    DataLoader iterator (and its workers) is created."""

    def __init__(self, trainer: CoOpTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # the epochs done: 0 before the first (and within it, when resumed from a checkpoint part-way through)
        self.trainer.train_dataset.coop_transform.epoch = math.floor(state.epoch + 1e-9)


@contextmanager
def _temporarily(args: TrainingArguments, **values):
    saved = {name: getattr(args, name) for name in values}
    for name, value in values.items():
        setattr(args, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(args, name, value)


def compute_accuracy_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for Trainer: accuracy and macro (per-class mean) accuracy, in percent."""
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    metric = ClassificationAccuracy()
    scores = metric.compute(predictions=logits.argmax(-1), references=eval_prediction.label_ids)
    return {name: 100.0 * value for name, value in scores.items()}


class AdamWCosineTrainer(CoOpTrainer):
    """[`CoOpTrainer`] with AdamW (`args.learning_rate`, `args.weight_decay`, betas 0.9 / 0.999) over
    `parameter_groups` and a cosine annealing of the learning rate at every step down to 1e-6 (the references'
    `CosineAnnealingLR(total_iters, eta_min=1e-6)`), no warm-up: CLIP-LoRA's recipe, and 2SFS's per stage."""

    eta_min = 1e-6
    betas = (0.9, 0.999)
    schedule = "cosine annealing at every step to {eta_min:g}"
    """How the model card names the schedule."""

    @classmethod
    def recipe(cls, args: CoOpTrainingArguments, epochs: float) -> dict[str, Any]:
        length = {"steps": args.max_steps} if args.max_steps > 0 else {"epochs": epochs}
        return length | {
            "optimizer": f"AdamW lr {args.learning_rate}, weight decay {args.weight_decay}, betas {cls.betas}",
            "schedule": cls.schedule.format(eta_min=cls.eta_min),
            "batch size": args.global_train_batch_size,
        }

    def parameter_groups(self, model: torch.nn.Module) -> list:
        """What AdamW updates: every trainable tensor."""
        return [parameter for parameter in model.parameters() if parameter.requires_grad]

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = self.parameter_groups(self.model if model is None else model)
            self.optimizer = torch.optim.AdamW(
                groups, lr=self.args.learning_rate, weight_decay=self.args.weight_decay, betas=self.betas
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=num_training_steps, eta_min=self.eta_min
            )
        return self.lr_scheduler

"""ProGrad's update rule as the training step of the CoOp `Trainer`: only the cross-entropy gradient updates the
prompt, projected off the distillation gradient's direction when the two conflict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...training import CoOpTrainer
from .modeling_prograd import ProGradModel


def prograd_projection(grad: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """ProGrad's gradient for one parameter tensor (both flattened): `grad` (the cross-entropy's) unchanged when it
    agrees with `reference` (the distillation loss's, towards zero-shot CLIP), else
    `grad - strength * (grad · r) r` with r = reference / ||reference||.

    With `strength` 1 a conflicting gradient becomes orthogonal to `reference`. A zero `reference` or `grad` leaves
    `grad` unchanged: the reference code divides by the zero norm, and its NaN cosine fails the `< 0` test, so it
    leaves the gradient unchanged too; here the division is never made.
    """
    reference_norm = torch.linalg.vector_norm(reference)
    grad_norm = torch.linalg.vector_norm(grad)
    if reference_norm == 0 or grad_norm == 0:
        return grad
    direction = (reference / reference_norm).flatten()
    if torch.dot((grad / grad_norm).flatten(), direction) >= 0:
        return grad
    return grad - strength * torch.dot(grad.flatten(), direction) * direction.view_as(grad)


class ProGradTrainer(CoOpTrainer):
    """[`CoOpTrainer`] whose training step is ProGrad's (Zhu et al., ICCV 2023), exactly as the reference's
    `prograd_backward_and_update`: the gradients of the cross-entropy (or `compute_loss_func`'s loss) and of the
    model's `distillation_loss` towards zero-shot CLIP are taken separately on the same batch, the former is
    projected per parameter tensor by [`prograd_projection`] with `config.prograd_lambda`, and written into `.grad`,
    so SGD's momentum and weight decay apply to the projected gradient. The logs add the mean `kl_loss`.

    Across processes both gradients are averaged before the projection (the projection of the whole batch, as on
    one device). The projection needs the whole batch's gradients, so gradient accumulation is refused, and fp16
    loss scaling (which would rescale the gradient written here) too: train in fp32 or with --bf16.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, ProGradModel):
            raise TypeError(f"ProGradTrainer trains a ProGradModel, got {type(model).__name__}.")
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError(
                f"ProGrad projects the gradient of a whole batch, so --gradient_accumulation_steps must be 1 (got "
                f"{self.args.gradient_accumulation_steps}): raise --per_device_train_batch_size instead."
            )
        if self.accelerator.scaler is not None:
            raise ValueError(
                "ProGrad writes its projected gradient itself, which fp16 loss scaling would rescale: drop --fp16 "
                "(train in fp32, or with --bf16)."
            )
        self._kl_sum, self._kl_steps = 0.0, 0

    def optimization_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        # The unwrapped model: its gradients are averaged across processes here, before the projection.
        prograd = self.accelerator.unwrap_model(model)
        with self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(
                prograd, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            distillation = prograd.distillation_loss(outputs["logits"], outputs["image_embeds"])
        parameters = [parameter for parameter in prograd.parameters() if parameter.requires_grad]
        distillation_grads = torch.autograd.grad(distillation, parameters, retain_graph=True)
        loss_grads = torch.autograd.grad(loss, parameters)
        strength = prograd.config.prograd_lambda
        for parameter, grad, reference in zip(parameters, loss_grads, distillation_grads, strict=True):
            if self.accelerator.num_processes > 1:
                grad, reference = self.accelerator.reduce(torch.stack([grad, reference]), reduction="mean")
            projected = prograd_projection(grad, reference, strength)
            parameter.grad = projected if parameter.grad is None else parameter.grad + projected
        self._kl_sum += distillation.item()
        self._kl_steps += 1
        return loss.detach()

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._kl_steps:
            logs["kl_loss"] = round(self._kl_sum / self._kl_steps, 4)
            self._kl_sum, self._kl_steps = 0.0, 0
        super().log(logs, *args, **kwargs)

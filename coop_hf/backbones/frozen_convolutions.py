"""A frozen convolutional tower run with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, y = s (x - mean) + beta with s = gamma / sqrt(var + eps); after
a convolution it can be folded into the convolution's weight (W s) and bias (beta - mean s), which saves one pass
over every activation map (about 13 % of a ResNet-50 forward on a CPU). `fold_batch_norms` does it at run time on
the tower's own weights: the folded weights are computed at each call, so nothing is copied, nothing goes stale when
the weights are loaded or moved, and the tower's parameters and `state_dict` stay as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn


class FoldedConvolution(nn.Module):
    """`batch_norm(convolution(x))` in eval mode, computed as one convolution with the folded weight and bias (the
    two modules are referenced, not copied)."""

    def __init__(self, convolution: nn.Conv2d, batch_norm: nn.BatchNorm2d):
        super().__init__()
        self.convolution, self.batch_norm = convolution, batch_norm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        convolution, norm = self.convolution, self.batch_norm
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if convolution.bias is not None:
            shift = shift + convolution.bias * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        weight = convolution.weight * scale.reshape(-1, 1, 1, 1)
        return F.conv2d(
            hidden, weight, shift, convolution.stride, convolution.padding, convolution.dilation, convolution.groups
        )


def fold_batch_norms(tower: nn.Module) -> fx.GraphModule | None:
    """`tower` (in eval mode, frozen) with each BatchNorm2d that only follows a Conv2d folded into it
    ([`FoldedConvolution`]), sharing every module of `tower`; None when torch.fx cannot trace it."""
    try:
        folded = fx.symbolic_trace(tower)
    except Exception:  # a tower fx cannot trace runs as it is
        return None
    modules = dict(folded.named_modules())
    for node in list(folded.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and type(modules[source.target]) is nn.Conv2d
            and len(source.users) == 1
            and modules[node.target].track_running_stats
        ):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(folded.get_submodule(parent), name, FoldedConvolution(modules[source.target], modules[node.target]))
        node.replace_all_uses_with(source)
        folded.graph.erase_node(node)
    folded.recompile()
    return folded

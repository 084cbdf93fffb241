"""How close two float32 results must be to count as equal: one rule for every equivalence test.

Why a rule. Two correct float32 computations of the same quantity seldom agree to the last bit, and the bits they
disagree in depend on the machine. A matmul or a reduction adds its terms in an order chosen by the kernel: 16-lane
AVX-512, 8-lane AVX2 or scalar loops (PyTorch picks by CPU; ATEN_CPU_CAPABILITY=default|avx2|avx512 forces one), MKL
or oneDNN or OpenBLAS blocking (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA), the number of threads. Each order rounds
differently, so a difference of 7e-7 on an Intel Xeon is 1.0e-6 on an AMD EPYC, and a fixed absolute tolerance tuned
on one machine (atol=1e-6 on values of magnitude 0.4 that went through a network and two optimizer steps) fails good
work on another. To see another CPU's rounding on this one, run the tests under
`ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41` (scalar kernels throughout: it
reproduces the EPYC failures of the old fixed tolerances), `ATEN_CPU_CAPABILITY=avx2` and the default.

The rule. A float32 result that went through `depth` stages in series may differ between two correct computations by

    tol = ULPS_PER_STAGE * depth * eps    (eps = torch.finfo(torch.float32).eps = 2**-23 ~ 1.19e-7)

of the largest magnitude in the expected tensor, plus `tol` relative on each entry:

    |actual - expected| <= tol * max|expected| + tol * |expected|    (rtol = tol, atol = tol * max|expected|)

* Scaled to max|expected|: a sum's rounding is relative to the terms summed, not to the result, so an entry near
  zero (a small gradient component, a logit, a cosine) carries the rounding of the whole tensor's scale.
* `depth` counts the float32 stages on the path to the compared values, `stages()` below: each transformer layer
  once forward, plus one for the rest (embeddings, projection, normalisation, logits, loss); for gradients the
  backward pass through all of it again; times the optimizer steps for values after training (each step's rounding
  carries into the next). An elementwise formula or a single reduction is depth 1.
* ULPS_PER_STAGE = 32. Measured on every comparison here under those kernel choices: most results differ by 1-8
  ulps of their largest magnitude per stage; gradients of small, cancelling sums (the backward passes of softmax,
  layer norm and the L2 normalisation subtract nearly equal terms; CoCoOp's gradient at a random N(0, 0.02) context)
  by up to ~23 per stage. With the per-entry term on top, no comparison used more than 36% of its allowance under any
  of them (the old fixed tolerances used up to 191%). Errors grow at most linearly with the depth (the worst case of
  rounding-error analysis; typically as its square root), so the rule errs on the generous side for deep models,
  never on the tight side for shallow ones.
* A small value computed as the difference of nearly equal numbers (an L1 distance between close features, a KL
  divergence between close distributions) is rounded at the scale of those numbers, not at its own: compare it
  within the tensor that gives it its scale (PromptSRC's loss terms are compared as one vector).

What it still catches. The depths used here give tol from 3.8e-6 (depth 1) to 9.9e-5 (gradients through ViT-B/32's
twelve layers); assert_close_fp32 refuses a depth whose tol exceeds MAX_TOL = 1e-4. A real bug (a wrong sign, a
missing term, a wrong scale, a skipped step) changes results by 1e-3 relative or more, ten times the loosest bound:
scaling an expected value by 1.001 fails every comparison made with this rule.

When to compute in float64 instead. Where a tight bound is the point, e.g. a term that is small next to float32
rounding (a weight decay of 5e-4 inside an update: 1e-5 of it) or an identity meant to hold to the last bit of the
mathematics, compute both sides in float64 and compare with a tight tolerance (float64's eps is 2.2e-16); or, as the
ProGrad step test does, choose the inputs so that the term is large enough to see. The models cast logits to float32
for their losses, so a float64 model's gradients still carry float32 rounding from the loss.

Exact comparisons stay exact: the same computation run twice (determinism, a save/load round trip, a cache equal to
what it caches, a seeded run resumed) must be bit-identical: torch.equal, or rtol=0, atol=0.
"""

from __future__ import annotations

import torch

EPS = torch.finfo(torch.float32).eps
ULPS_PER_STAGE = 32
MAX_TOL = 1e-4


def stages(layers: int, *, backward: bool = False, steps: int = 1) -> int:
    """The depth of values that went through `layers` transformer layers (plus one stage for the rest) forward, and
    back again for gradients (`backward`), once per optimizer step (`steps`)."""
    return steps * (2 if backward else 1) * (layers + 1)


def fp32_tolerance(depth: int) -> float:
    """The relative tolerance of the rule for `depth` float32 stages in series."""
    if depth < 1:
        raise ValueError(f"depth {depth}: a computation has at least one stage")
    tol = ULPS_PER_STAGE * depth * EPS
    if tol > MAX_TOL:
        raise ValueError(
            f"depth {depth} gives a tolerance of {tol:.1e}, above {MAX_TOL:g}, where a real bug could pass: compare "
            "in float64 instead"
        )
    return tol


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor, *, depth: int, msg: str | None = None) -> None:
    """`actual` equals `expected` up to float32 rounding over `depth` stages: within fp32_tolerance(depth) of
    max|expected|, plus that much relative on each entry (the module docstring says why)."""
    tol = fp32_tolerance(depth)
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    rule = f"float32 rule at depth {depth}: tol {tol:.2e}, atol {tol * scale:.2e} (tests/tolerances.py)"
    torch.testing.assert_close(
        actual, expected, rtol=tol, atol=tol * scale, msg=lambda text: f"{msg + ': ' if msg else ''}{text}\n{rule}"
    )

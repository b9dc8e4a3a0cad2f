"""Noise injection's training mask as one autograd function (docs/method.md).

Along `dim`, features 1..k pass unchanged, feature k+1 becomes `a * x + b * sigma * noise`
(sigma: that feature's standard deviation, a constant to the gradient) and the rest are
zero. Written with plain tensor operations, autograd makes five passes over the
whole activation per mask: the forward multiply; in the backward, the clone behind the
in-place boundary write, the multiply, and the zero-filled gradient of the boundary slice
plus its accumulation. Here the backward is one multiply (a copy where nothing follows
the boundary feature): on the ResNet, with up to 12 masks per stage, the masks are most
of what the dynamic step costs beyond the dense one.
The keep vector is broadcast rather than slices concatenated, so the output keeps the
input's memory layout (channels-last convolutions stay fast).
"""

from __future__ import annotations

import torch


def keep_vector(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Ones for the first k features, zeros after, shaped to broadcast along `dim`."""
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    return (torch.arange(x.shape[dim], device=x.device) < k).to(x.dtype).view(shape)


def _kept(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """A copy of `x` with the features after the first k zeroed; the boundary feature (k+1)
    is left for the caller to overwrite. With nothing after it (the slot's weights narrowed
    to the live features) a plain copy: a broadcast multiply over an odd channel count in
    the channels-last layout is not vectorised."""
    if k + 1 == x.shape[dim]:
        return x.clone()
    return x * keep_vector(x, k, dim)


class BoundaryMix(torch.autograd.Function):
    """`BoundaryMix.apply(x, a, b, noise, k, dim)`: the mask above. `a`, `b`: scalar tensors
    (gradients flow to them); `noise`: unit noise shaped like `x.narrow(dim, k, 1)`, or None
    for `a * x` alone. Needs k < n."""

    @staticmethod
    def forward(ctx, x, a, b, noise, k: int, dim: int):
        boundary = x.narrow(dim, k, 1)
        out = _kept(x, k, dim)
        mixed = a.to(x.dtype) * boundary
        if noise is not None:
            precise = boundary.to(torch.promote_types(x.dtype, torch.float32))  # no std in half precision
            sigma = precise.std(unbiased=False).clamp_min(1e-6).to(x.dtype)
            noise = sigma * noise
            mixed = mixed + b.to(x.dtype) * noise
        out.narrow(dim, k, 1).copy_(mixed)
        ctx.save_for_backward(boundary, a, noise)
        ctx.k, ctx.dim = k, dim
        return out

    @staticmethod
    def backward(ctx, grad):
        boundary, a, noise = ctx.saved_tensors
        k, dim = ctx.k, ctx.dim
        grad_boundary = grad.narrow(dim, k, 1)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _kept(grad, k, dim)
            grad_x.narrow(dim, k, 1).copy_(grad_boundary * a.detach().to(grad.dtype))
        if ctx.needs_input_grad[1]:
            grad_a = (grad_boundary * boundary).sum().to(a.dtype).reshape(a.shape)
        if ctx.needs_input_grad[2] and noise is not None:
            grad_b = (grad_boundary * noise).sum().to(a.dtype).reshape(a.shape)
        return grad_x, grad_a, grad_b, None, None, None

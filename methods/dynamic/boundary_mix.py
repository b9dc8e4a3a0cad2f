"""Noise injection's training mask as one autograd function (docs/method.md).

Along `dim`, features 1..k pass unchanged, feature k+1 becomes `a * x + b * sigma * noise`
(sigma: that feature's standard deviation, a constant to the gradient) and the rest are
zero. Written with plain tensor operations, autograd makes five passes over the whole
activation per mask (the multiply by a keep vector; in the backward, the clone behind the
in-place boundary write, the multiply, the zero-filled gradient of the boundary slice and
its accumulation). Here each direction makes one copy and zeroes the dead features in
place: on the ResNet, with up to 12 masks per stage, the masks are most of what the
dynamic step costs beyond the dense one. Copies keep the input's memory layout, so
channels-last convolutions stay fast.

With `relu=True` the function also applies the ReLU that precedes the mask and makes no
full pass beyond the ReLU's own: the forward pass zeroes the dead features of the ReLU's
output in place, and the backward pass is the ReLU's (a zero output passes no gradient,
so the dead features get none) with the boundary feature's gradient written over it.
"""

from __future__ import annotations

import torch


def keep_vector(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Ones for the first k features, zeros after, shaped to broadcast along `dim`."""
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    return (torch.arange(x.shape[dim], device=x.device) < k).to(x.dtype).view(shape)


def _zero_dead(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Zero, in place, the features after the boundary one (k+1); returns `x`."""
    n = x.shape[dim]
    if k + 1 < n:
        x.narrow(dim, k + 1, n - k - 1).zero_()
    return x


class BoundaryMix(torch.autograd.Function):
    """`BoundaryMix.apply(x, a, b, noise, k, dim, relu)`: the mask above, after a ReLU of `x`
    if `relu`. `a`, `b`: scalar tensors (gradients flow to them); `noise`: unit noise shaped
    like `x.narrow(dim, k, 1)`, or None for `a * x` alone. Needs k < n.

    The boundary feature is worked on as a dense copy: a slice of one feature is strided
    (every n-th element in the channels-last layout), and each operation on it several times
    slower."""

    @staticmethod
    def forward(ctx, x, a, b, noise, k: int, dim: int, relu: bool = False):
        if relu:
            boundary = x.narrow(dim, k, 1).relu()
            out = _zero_dead(torch.relu(x), k, dim)
        else:
            boundary = x.narrow(dim, k, 1).contiguous()
            out = _zero_dead(x.clone(), k, dim)
        mixed = boundary * a.to(x.dtype)
        sigma = None
        if noise is not None:
            precise = boundary.to(torch.promote_types(x.dtype, torch.float32))  # no std in half precision
            sigma = precise.std(unbiased=False).clamp_min(1e-6).to(x.dtype)
            mixed = torch.addcmul(mixed, noise, sigma * b.to(x.dtype))
        out.narrow(dim, k, 1).copy_(mixed)
        ctx.save_for_backward(boundary, a, noise, sigma, out if relu else None)
        ctx.k, ctx.dim, ctx.relu = k, dim, relu
        return out

    @staticmethod
    def backward(ctx, grad):
        boundary, a, noise, sigma, out = ctx.saved_tensors
        k, dim = ctx.k, ctx.dim
        grad_boundary = grad.narrow(dim, k, 1).contiguous()
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_mixed = grad_boundary * a.detach().to(grad.dtype)
            if ctx.relu:  # zero where the output is: below the ReLU's threshold and the dead features
                grad_x = torch.ops.aten.threshold_backward(grad, out, 0)
                grad_mixed = torch.ops.aten.threshold_backward(grad_mixed, boundary, 0)
            else:
                grad_x = _zero_dead(grad.clone(), k, dim)
            grad_x.narrow(dim, k, 1).copy_(grad_mixed)
        flat = grad_boundary.reshape(-1)  # sums of products as dot products: one operation each
        if ctx.needs_input_grad[1]:
            grad_a = torch.dot(flat, boundary.reshape(-1)).to(a.dtype).reshape(a.shape)
        if ctx.needs_input_grad[2] and noise is not None:
            grad_b = (torch.dot(flat, noise.reshape(-1)) * sigma).to(a.dtype).reshape(a.shape)
        return grad_x, grad_a, grad_b, None, None, None, None

"""Modulated deformable convolution (DCNv2): plain PyTorch on CPU, mmcv's kernel on CUDA.

mmcv 2.1.0 has a CPU kernel for ``ModulatedDeformConv2d`` (``type='DCNv2'``), but it is a
scalar loop and its backward in particular is very slow (~1.2 s for a [2, 64, 64, 64] input
with a 3x3 kernel on one thread; it was 60% of a CPU training iteration of our ResNeSt+DCNv2
model). This module provides

* :func:`modulated_deform_conv2d_cpu` -- the same computation as mmcv's
  ``modulated_deform_conv_forward`` (``mmcv/ops/csrc/pytorch/modulated_deform_conv.cpp`` and
  ``.../cpu/modulated_deform_conv.cpp``), written as a bilinear sampling by a CSR sparse
  matrix with an explicit backward (:class:`_BilinearSample`), then a matmul with the
  weight. The semantics reproduced, for kernel tap ``k = i * kw + j`` of deform
  group ``g`` at output ``(y, x)``:

  - offsets: ``offset[n, g*2*K + 2*k]`` is the **h** (row) offset and
    ``offset[n, g*2*K + 2*k + 1]`` the **w** (column) offset (interleaved (dy, dx) pairs,
    ``K = kh * kw``); the mask is ``mask[n, g*K + k]``;
  - the sample point is ``h = y*stride_h - pad_h + i*dil_h + dy``,
    ``w = x*stride_w - pad_w + j*dil_w + dx``;
  - it is sampled bilinearly only if ``-1 < h < H`` and ``-1 < w < W`` (otherwise the column
    entry is 0, and so are its gradients w.r.t. offset and mask -- mmcv's backward uses the
    same test, ``<= -1 || >= H``); inside that range each of the 4 corners outside the
    image contributes 0 (``dmcn_im2col_bilinear``);
  - corners come from ``floor`` of the coordinate, so at an exactly integer coordinate (e.g.
    zero offsets, mmcv's DCNv2 init) the offset gradient is the right-sided derivative, as in
    mmcv's ``dmcn_get_coordinate_weight``;
  - the sampled value is multiplied by the mask; input channels are split into
    ``deform_groups`` contiguous blocks (each with its own offsets/mask) and, independently,
    into ``groups`` contiguous blocks for the (grouped) matmul with the weight;
  - dtypes as mmcv's ``ModulatedDeformConv2dFunction.forward`` (for amp): input is cast to
    offset's dtype, weight, bias and mask to the input's.

  Gradients w.r.t. input, offset, mask, weight and bias equal mmcv's backward kernels
  (``modulated_deformable_col2im[_coord]``) up to float rounding.
* :func:`modulated_deform_conv2d` -- dispatcher with the signature of
  ``mmcv.ops.modulated_deform_conv2d``: mmcv's op for non-CPU tensors (CUDA, NPU, ...), ours
  for CPU tensors.

How ``type='DCNv2'`` (mmcv's ``ModulatedDeformConv2dPack``) reaches the dispatcher:
:func:`install` replaces the module-level name ``modulated_deform_conv2d`` in
``mmcv.ops.modulated_deform_conv`` (and its re-export in ``mmcv.ops``). Both
``ModulatedDeformConv2d.forward`` and ``ModulatedDeformConv2dPack.forward`` look that global
up at call time, so every DCNv2 layer -- built from configs by ``build_conv_layer`` (mmdet's
ResNet/ResNeSt ``dcn=``, our FPG neck's ``conv_cfg``), or directly (mmdet's ``DyDCNv2``) --
goes through it, whatever was imported before. As for CARAFE (see :mod:`.carafe`) we patch
rather than register a new type: configs keep mmcv's type names, classes, parameters and
state-dict keys stay mmcv's, and CUDA runs call mmcv's kernel unchanged. Code that bound
``from mmcv.ops import modulated_deform_conv2d`` *before* install keeps mmcv's function (none
in mmcv/mmdet/this repo does). ``ModulatedDeformConv2dFunction`` itself is left alone.

:func:`install` is idempotent; ``seesaw_lvis.models.ops`` calls it at import.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .patch import MmcvPatch
from .sparse import csr_matrix

__all__ = ["modulated_deform_conv2d", "modulated_deform_conv2d_cpu", "mmcv_modulated_deform_conv2d",
           "install", "is_installed", "uninstall"]

_IntPair = Union[int, Sequence[int]]


class _BilinearSample(Function):
    """``mask * bilinear(x, h, w)`` as a sparse matrix product (see :func:`_sample_columns`).

    Each sample point is one row of a CSR matrix ``A`` with its 4 corners as entries (a
    corner outside the image, or a point outside ``-1 < h < H``, ``-1 < w < W``, has weight 0
    there), so ``columns = A @ X`` with ``X`` the input laid out ``(B*H*W, C)``: one fused
    product, no ``(points, C)`` temporary per corner (2.2x faster than gathering the
    corners, measured on a [2, 64, 64, 64] input). Backward, with ``G`` the columns'
    gradient: ``grad X = A^T @ G`` as four ``index_add_`` (one per corner), and the
    gradients w.r.t. ``h``, ``w`` and the mask from the dot products of ``G`` with the 4
    corners' values (one gather, one batched matmul), weighted by the bilinear weights'
    derivatives (``d/dh``, ``d/dw``) and by the weights themselves.
    """

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, w: Tensor, mask: Tensor) -> Tensor:
        b, c, height, width = x.shape
        points = h.size(1)
        valid = ((h > -1) & (w > -1) & (h < height) & (w < width)).to(x.dtype)
        h0, w0 = torch.floor(h), torch.floor(w)
        lh, lw = h - h0, w - w0
        hh, hw = 1 - lh, 1 - lw
        h0i, w0i = h0.long(), w0.long()
        h1i, w1i = h0i + 1, w0i + 1
        in_h0 = (h0i >= 0) & (h0i <= height - 1)
        in_h1 = (h1i >= 0) & (h1i <= height - 1)
        in_w0 = (w0i >= 0) & (w0i <= width - 1)
        in_w1 = (w1i >= 0) & (w1i <= width - 1)
        base = (torch.arange(b, device=x.device) * (height * width)).unsqueeze(1)
        corners = ((h0i, w0i, in_h0 & in_w0), (h0i, w1i, in_h0 & in_w1),
                   (h1i, w0i, in_h1 & in_w0), (h1i, w1i, in_h1 & in_w1))
        inside = torch.stack([ok for _, _, ok in corners], -1).to(x.dtype) * valid.unsqueeze(-1)
        cols = torch.stack([torch.where(ok, base + hi * width + wi, torch.zeros_like(hi))
                            for hi, wi, ok in corners], -1).reshape(-1)
        # bilinear weights of the 4 corners and their derivatives w.r.t. h and w
        weight = torch.stack([hh * hw, hh * lw, lh * hw, lh * lw], -1) * inside
        d_h = torch.stack([-hw, -lw, hw, lw], -1) * inside
        d_w = torch.stack([-hh, hh, -lh, lh], -1) * inside
        m = mask.to(x.dtype).unsqueeze(-1)
        rows = b * points
        crow = torch.arange(0, 4 * rows + 1, 4, device=x.device)
        src = x.permute(0, 2, 3, 1).reshape(b * height * width, c)
        out = csr_matrix(crow, cols, (weight * m).reshape(-1), (rows, src.size(0))) @ src
        ctx.save_for_backward(x, mask, cols, weight, d_h, d_w)
        return out.view(b, points, c)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, mask, cols, weight, d_h, d_w = ctx.saved_tensors
        b, c, height, width = x.shape
        points = mask.size(1)
        rows, n_src = b * points, b * height * width
        g = grad.reshape(rows, c).to(x.dtype)
        m = mask.to(x.dtype).reshape(rows, 1)
        grad_x = grad_h = grad_w = grad_mask = None
        corner_cols = cols.view(rows, 4)
        if ctx.needs_input_grad[0]:
            coef = weight.reshape(rows, 4) * m
            rows_grad = x.new_zeros(n_src, c)
            for k in range(4):  # index_add_ sums in index order on CPU: deterministic
                rows_grad.index_add_(0, corner_cols[:, k], g * coef[:, k:k + 1])
            grad_x = rows_grad.view(b, height, width, c).permute(0, 3, 1, 2).contiguous()
        if any(ctx.needs_input_grad[1:]):
            src = x.permute(0, 2, 3, 1).reshape(n_src, c)
            # <X[corner], G[point]> for the 4 corners of every point: one gather, one bmm
            dots = torch.bmm(src.index_select(0, cols).view(rows, 4, c), g.unsqueeze(-1)).squeeze(-1)
            grad_h = ((d_h.reshape(rows, 4) * dots).sum(-1, keepdim=True) * m).view(b, points)
            grad_w = ((d_w.reshape(rows, 4) * dots).sum(-1, keepdim=True) * m).view(b, points)
            grad_mask = (weight.reshape(rows, 4) * dots).sum(-1).view(b, points).to(mask.dtype)
        return grad_x, grad_h, grad_w, grad_mask


def _sample_columns(x: Tensor, h: Tensor, w: Tensor, mask: Tensor) -> Tensor:
    """Bilinear samples of ``x`` at ``(h, w)``, times ``mask``, channel-last.

    Args:
        x: (B, C, H, W) -- B = batch * deform_groups.
        h, w, mask: (B, P) sample coordinates (pixels) and modulation, P sample points.
    Returns:
        (B, P, C): ``mask * bilinear(x, h, w)`` with mmcv's zero rules (see module doc).
    """
    return _BilinearSample.apply(x, h, w, mask)


def modulated_deform_conv2d_cpu(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                                bias: Optional[Tensor] = None, stride: _IntPair = 1,
                                padding: _IntPair = 0, dilation: _IntPair = 1, groups: int = 1,
                                deform_groups: int = 1) -> Tensor:
    """DCNv2 in plain PyTorch, mmcv's semantics (see module doc); any device, autograd.

    Args:
        input: (N, C, H, W). offset: (N, deform_groups * 2 * kh * kw, Ho, Wo).
        mask: (N, deform_groups * kh * kw, Ho, Wo). weight: (C_out, C / groups, kh, kw).
        bias: (C_out,) or None.
    Returns:
        (N, C_out, Ho, Wo) with ``Ho = (H + 2*pad_h - (dil_h*(kh-1)+1)) // stride_h + 1``.
    """
    if input.dim() != 4:
        raise ValueError(f"Expected 4D tensor as input, got {input.dim()}D tensor instead.")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    # mmcv's dtype rules (amp: offset comes from an autocast conv)
    input = input.type_as(offset)
    weight = weight.type_as(input)
    mask = mask.type_as(input)
    if bias is not None:
        bias = bias.type_as(input)

    n, c, height, width = input.shape
    c_out, c_in_g, kh, kw = weight.shape
    if c != c_in_g * groups:
        raise ValueError(f"Input shape and kernel channels won't match: ({c} vs "
                         f"{c_in_g * groups}).")
    if c % deform_groups != 0 or c_out % groups != 0:
        raise ValueError(f"channels ({c} in, {c_out} out) not divisible by deform_groups "
                         f"({deform_groups}) / groups ({groups})")
    ho = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"convolution input is too small (output would be "
                         f"{n}x{c_out}x{ho}x{wo})")
    kk = kh * kw
    dg = deform_groups
    if tuple(offset.shape) != (n, dg * 2 * kk, ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} != {(n, dg * 2 * kk, ho, wo)}")
    if tuple(mask.shape) != (n, dg * kk, ho, wo):
        raise ValueError(f"mask shape {tuple(mask.shape)} != {(n, dg * kk, ho, wo)}")

    dtype, device = input.dtype, input.device
    # sample points in (Ho, Wo, K) order so the columns come out as (N, L, K, C)
    off = offset.reshape(n, dg, kk, 2, ho, wo).permute(0, 1, 4, 5, 2, 3)  # N,dg,Ho,Wo,K,2
    ys = torch.arange(ho, device=device, dtype=dtype) * sh - ph
    xs = torch.arange(wo, device=device, dtype=dtype) * sw - pw
    ki = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)
    kj = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    base_h = ys.view(ho, 1, 1) + ki.view(1, 1, kk)  # Ho, 1, K
    base_w = xs.view(1, wo, 1) + kj.view(1, 1, kk)  # 1, Wo, K
    h = (off[..., 0] + base_h).reshape(n * dg, ho * wo * kk)
    w = (off[..., 1] + base_w).reshape(n * dg, ho * wo * kk)
    m = mask.reshape(n, dg, kk, ho, wo).permute(0, 1, 3, 4, 2).reshape(n * dg, ho * wo * kk)

    x = input.reshape(n * dg, c // dg, height, width)
    cols = _sample_columns(x, h, w, m)  # (N*dg, L*K, C/dg)
    l_ = ho * wo
    if dg > 1:
        cols = cols.view(n, dg, l_, kk, c // dg).permute(0, 2, 3, 1, 4)  # N, L, K, dg, C/dg
    cols = cols.reshape(n, l_, kk, c)
    if groups == 1:
        wmat = weight.permute(0, 2, 3, 1).reshape(c_out, kk * c)  # (o, k*C + c)
        out = torch.matmul(cols.reshape(n, l_, kk * c), wmat.t())  # N, L, C_out
    else:
        cg = c_in_g
        cols = cols.view(n, l_, kk, groups, cg).permute(0, 3, 1, 2, 4).reshape(
            n, groups, l_, kk * cg)
        wmat = weight.view(groups, c_out // groups, cg, kk).permute(0, 3, 2, 1).reshape(
            groups, kk * cg, c_out // groups)
        out = torch.matmul(cols, wmat)  # N, groups, L, C_out/groups
        out = out.permute(0, 2, 1, 3).reshape(n, l_, c_out)
    if bias is not None:
        out = out + bias
    return out.permute(0, 2, 1).reshape(n, c_out, ho, wo)


def mmcv_modulated_deform_conv2d(*args, **kwargs) -> Tensor:
    """mmcv's own op (``ModulatedDeformConv2dFunction.apply``), whatever is installed."""
    from mmcv.ops.modulated_deform_conv import ModulatedDeformConv2dFunction

    return ModulatedDeformConv2dFunction.apply(*args, **kwargs)


def modulated_deform_conv2d(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                            bias: Optional[Tensor] = None, stride: _IntPair = 1,
                            padding: _IntPair = 0, dilation: _IntPair = 1, groups: int = 1,
                            deform_groups: int = 1) -> Tensor:
    """Same signature as ``mmcv.ops.modulated_deform_conv2d``: ours on CPU, mmcv's elsewhere."""
    if input.device.type == "cpu":
        return modulated_deform_conv2d_cpu(input, offset, mask, weight, bias, stride, padding,
                                           dilation, groups, deform_groups)
    return mmcv_modulated_deform_conv2d(input, offset, mask, weight, bias, stride, padding,
                                        dilation, groups, deform_groups)


# ----------------------------------------------------------------------- mmcv module patch
def _mdc_module():
    import mmcv.ops.modulated_deform_conv as mdc

    return mdc


# Every DCNv2 layer through the dispatcher: ``ModulatedDeformConv2d[Pack].forward`` looks
# ``mmcv.ops.modulated_deform_conv.modulated_deform_conv2d`` up at call time.
_PATCH = MmcvPatch(_mdc_module, "modulated_deform_conv2d", modulated_deform_conv2d, reexported=True)
install, is_installed, uninstall = _PATCH.install, _PATCH.is_installed, _PATCH.uninstall

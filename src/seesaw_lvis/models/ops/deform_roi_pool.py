"""Deformable RoI pooling on any device, with mmcv 2.1's ``DeformRoIPool`` semantics.

mmcv 2.1.0 has ``deform_roi_pool`` kernels for CUDA (and NPU/MLU) only. This module
re-implements, in plain PyTorch, what ``mmcv/ops/csrc/common/cuda/deform_roi_pool_cuda_kernel.cuh``
computes, so the TSD head runs on CPU; :func:`deform_roi_pool` dispatches to mmcv's kernel for
CUDA tensors.

Semantics (forward), for RoI ``k = (b, x1, y1, x2, y2)`` and output bin ``(ph, pw)``:

* ``start = (x1, y1) * spatial_scale - 0.5`` and ``end = (x2, y2) * spatial_scale - 0.5``
  (the half-pixel shift of RoIAlign ``aligned=True``; the width/height are *not* clamped
  to >= 1), ``roi_w = end_x - start_x``, ``bin_w = roi_w / out_w`` (same for h);
* sampling grid per bin ``gh x gw``: ``sampling_ratio`` if > 0 else
  ``ceil(roi_h / out_h) x ceil(roi_w / out_w)`` (a RoI with a grid <= 0 pools to 0);
* the bin is shifted by ``gamma * roi_w * offset[k, 0, ph, pw]`` in x and
  ``gamma * roi_h * offset[k, 1, ph, pw]`` in y (offset layout ``(K, 2, out_h, out_w)``,
  x first, exactly mmcv's);
* sample ``(iy, ix)`` sits at ``start + p * bin + (i + 0.5) * bin / g`` (+ the shift), its
  value is mmcv's ``bilinear_interpolate`` (0 when ``y < -1 or y > H or x < -1 or x > W``,
  coordinates clamped at 0 below and at ``H - 1`` / ``W - 1`` above), and the bin is the
  mean of its ``gh * gw`` samples.

With a zero offset this is exactly ``mmcv.ops.roi_align(..., aligned=True)`` (avg mode),
which has a CPU kernel; ``tests/unit/test_ops.py`` checks it.

Backward reproduces mmcv's CUDA backward *as written*, including its boundary behaviour:
the gradient w.r.t. the input uses the forward's bilinear weights; the gradient w.r.t. the
offset is ``gamma * roi_w * sum_c grad_out * dV/dx`` where mmcv's ``dV/dx`` uses the clamped
corner indices with the *unclamped* sample coordinate (inside the map this is the exact
derivative; on the clamped border band it differs from the true derivative of the forward,
and we follow mmcv so CPU and GPU training agree). No gradient w.r.t. ``rois`` (as mmcv).

Implementation: the pooling is a sparse linear map ``A`` (rows: RoI bins, columns: input
pixels; four bilinear corners per sample, weight / count). The samples are enumerated bin
by bin, so with the four corners of a sample side by side the entries come sorted by row:
``A`` is built directly as a CSR matrix (no sort) and ``out = A @ X``, with ``X = input``
laid out as ``(B*H*W, C)``, is one CSR x dense product. ``grad_X = A^T @ grad_out`` uses
``A^T`` as a CSR matrix too (entries stably sorted by column: each output row is summed by
one thread in a fixed order, so the result is deterministic); the offset gradient uses two
more maps with ``A``'s structure holding the ``dV/dx`` and ``dV/dy`` weights. (A COO matrix
did the same but coalesced -- sorted -- its entries on every product: ~13x slower, 18% of a
TSD row's evaluation at mini.) Memory is ``O(#samples * 4 + K * bins * C)`` -- no
per-channel copy of the sample grid -- and the samples are enumerated exactly per RoI
(adaptive grids differ between RoIs).
"""
from __future__ import annotations

import sys
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .patch import MmcvPatch
from .sparse import csr_matrix

__all__ = ["deform_roi_pool", "deform_roi_pool_cpu", "DeformRoIPoolAnyDevice", "roi_align",
           "install", "is_installed", "uninstall"]


class _PoolMap(NamedTuple):
    """The pooling map's entries in CSR order: row pointers ``crow`` (``rows + 1``), column
    (input pixel, flat over ``B*H*W``) and ``weight`` of each entry, for the offset gradient
    the entries' ``dx``/``dy`` weights (or None), and the rows to poison with NaN."""

    shape: Tuple[int, int]
    crow: Tensor
    cols: Tensor
    weight: Tensor
    dx: Optional[Tensor]
    dy: Optional[Tensor]
    poisoned: Tensor  # (rows,) bool: bins with a non-finite sample or RoI, NaN in the output

    def matrix(self, values: Tensor) -> Tensor:
        return csr_matrix(self.crow, self.cols, values, self.shape)

    def transposed(self) -> Tensor:
        """``A^T`` as CSR: the entries stably sorted by column."""
        rows = torch.repeat_interleave(torch.arange(self.shape[0], device=self.cols.device),
                                       self.crow.diff())
        order = torch.argsort(self.cols, stable=True)
        ccol = torch.zeros(self.shape[1] + 1, dtype=torch.long, device=self.cols.device)
        ccol[1:] = torch.cumsum(torch.bincount(self.cols, minlength=self.shape[1]), 0)
        return csr_matrix(ccol, rows[order], self.weight[order], (self.shape[1], self.shape[0]))


def _sampling_maps(input_shape: Sequence[int], rois: Tensor, offset: Optional[Tensor],
                   out_h: int, out_w: int, spatial_scale: float, sampling_ratio: int,
                   gamma: float, need_grad_maps: bool):
    """The pooling map's entries (and, optionally, the d/dx, d/dy weights).

    Returns ``(map, roi_w, roi_h)``; the map has ``K * out_h * out_w`` rows and
    ``B * H * W`` columns.
    """
    bsz, _, height, width = input_shape
    dtype, device = rois.dtype, rois.device
    num_rois = rois.size(0)
    nbins = out_h * out_w

    batch_idx = rois[:, 0].long()
    start_w = rois[:, 1] * spatial_scale - 0.5
    start_h = rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale - 0.5 - start_w
    roi_h = rois[:, 4] * spatial_scale - 0.5 - start_h
    bin_w = roi_w / out_w
    bin_h = roi_h / out_h
    if sampling_ratio > 0:
        grid_h = torch.full((num_rois,), sampling_ratio, dtype=torch.long, device=device)
        grid_w = grid_h.clone()
    else:
        # computed in the RoI dtype (float32 in practice, like the kernel's ceilf)
        grid_h = torch.ceil(roi_h / out_h).long()
        grid_w = torch.ceil(roi_w / out_w).long()
    count = (grid_h * grid_w).clamp(min=1).to(dtype)
    grid_h = grid_h.clamp(min=0)
    grid_w = grid_w.clamp(min=0)
    # a non-positive grid in either direction: the kernel's loops never run -> 0
    samples_per_roi = nbins * grid_h * grid_w

    total = int(samples_per_roi.sum())
    shape = (num_rois * nbins, bsz * height * width)
    if total == 0:
        crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=device)
        none = torch.zeros(0, dtype=torch.long, device=device)
        empty = torch.zeros(0, dtype=dtype, device=device)
        poisoned = ~torch.isfinite(rois[:, 1:]).all(1).repeat_interleave(nbins)
        return _PoolMap(shape, crow, none, empty, empty, empty, poisoned), roi_w, roi_h

    roi_of = torch.repeat_interleave(torch.arange(num_rois, device=device), samples_per_roi)
    first = torch.cumsum(samples_per_roi, 0) - samples_per_roi
    local = torch.arange(total, device=device) - first[roi_of]
    gh, gw = grid_h[roi_of], grid_w[roi_of]
    ix = local % gw
    rest = local // gw
    iy = rest % gh
    rest = rest // gh
    bx = rest % out_w
    by = rest // out_w

    sw, sh = start_w[roi_of], start_h[roi_of]
    if offset is not None:
        off = offset.reshape(num_rois, 2, nbins)
        bin_lin = by * out_w + bx
        sw = sw + gamma * roi_w[roi_of] * off[roi_of, 0, bin_lin]
        sh = sh + gamma * roi_h[roi_of] * off[roi_of, 1, bin_lin]
    bh, bw = bin_h[roi_of], bin_w[roi_of]
    y = sh + by.to(dtype) * bh + (iy.to(dtype) + 0.5) * bh / gh.to(dtype)
    x = sw + bx.to(dtype) * bw + (ix.to(dtype) + 0.5) * bw / gw.to(dtype)

    # A non-finite coordinate (an exploded offset or RoI) samples nothing -- cast to an int it
    # would index outside the input -- and its bin is poisoned with NaN below, so the loss
    # turns NaN and training stops with a clear error (engine.train's non-finite loss check).
    finite = torch.isfinite(y) & torch.isfinite(x)
    y = torch.where(finite, y, torch.full_like(y, -2.0))
    x = torch.where(finite, x, torch.full_like(x, -2.0))
    valid = ~((y < -1.0) | (y > height) | (x < -1.0) | (x > width))
    yc = y.clamp(min=0)
    xc = x.clamp(min=0)
    y_low = yc.floor().long()
    x_low = xc.floor().long()
    top_y = y_low >= height - 1
    top_x = x_low >= width - 1
    y_low = torch.where(top_y, torch.full_like(y_low, height - 1), y_low)
    x_low = torch.where(top_x, torch.full_like(x_low, width - 1), x_low)
    y_high = torch.where(top_y, y_low, y_low + 1)
    x_high = torch.where(top_x, x_low, x_low + 1)
    yc = torch.where(top_y, y_low.to(dtype), yc)
    xc = torch.where(top_x, x_low.to(dtype), xc)
    ly = yc - y_low.to(dtype)
    lx = xc - x_low.to(dtype)
    hy, hx = 1.0 - ly, 1.0 - lx

    # the samples come bin by bin: with each sample's four corners side by side
    # (sample-major), the entries are in row order, as CSR wants them
    row = roi_of * nbins + by * out_w + bx
    poisoned = ~torch.isfinite(rois[:, 1:]).all(1).repeat_interleave(nbins)
    poisoned[row[~finite]] = True
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=shape[0]) * 4, 0)
    base = batch_idx[roi_of] * (height * width)
    cols = torch.stack([base + y_low * width + x_low, base + y_low * width + x_high,
                        base + y_high * width + x_low, base + y_high * width + x_high], 1).reshape(-1)
    inv = valid.to(dtype) / count[roi_of]

    def entries(weights):
        return (torch.stack(weights, 1) * inv[:, None]).reshape(-1)

    weight = entries([hy * hx, hy * lx, ly * hx, ly * lx])
    dx = dy = None
    if need_grad_maps:  # mmcv's backward: clamped corners, unclamped coordinates (y, x)
        yl, yh = y_low.to(dtype), y_high.to(dtype)
        xl, xh = x_low.to(dtype), x_high.to(dtype)
        dx = entries([y - yh, yh - y, yl - y, y - yl])
        dy = entries([x - xh, xl - x, xh - x, x - xl])
    return _PoolMap(shape, crow, cols, weight, dx, dy, poisoned), roi_w, roi_h


def _to_rows(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B*H*W, C)
    return t.permute(0, 2, 3, 1).reshape(-1, t.size(1))


class _DeformRoIPoolCPU(Function):

    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, offset: Optional[Tensor],
                output_size: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
                gamma: float) -> Tensor:
        out_h, out_w = output_size
        rois = rois.detach().to(input.dtype)
        has_offset = offset is not None and offset.numel() > 0
        off = offset.detach().to(input.dtype) if has_offset else None
        need = has_offset and ctx.needs_input_grad[2]
        pool_map, roi_w, roi_h = _sampling_maps(
            input.shape, rois, off, out_h, out_w, spatial_scale, sampling_ratio, gamma, need)
        num_rois = rois.size(0)
        out_rows = pool_map.matrix(pool_map.weight) @ _to_rows(input.detach())
        out_rows[pool_map.poisoned] = float("nan")
        ctx.input_shape = input.shape
        ctx.has_offset = has_offset
        ctx.gamma = gamma
        ctx.out_hw = (out_h, out_w)
        ctx.pool_map = pool_map
        ctx.save_for_backward(input, roi_w, roi_h)
        out = out_rows.reshape(num_rois, out_h, out_w, input.size(1))
        return out.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, roi_w, roi_h = ctx.saved_tensors
        pool_map = ctx.pool_map
        bsz, channels, height, width = ctx.input_shape
        out_h, out_w = ctx.out_hw
        num_rois = grad_output.size(0)
        g_rows = grad_output.permute(0, 2, 3, 1).reshape(-1, channels).to(input.dtype)
        grad_input = grad_offset = None
        if ctx.needs_input_grad[0]:
            gx = pool_map.transposed() @ g_rows
            grad_input = gx.reshape(bsz, height, width, channels).permute(0, 3, 1, 2).contiguous()
        if ctx.has_offset and ctx.needs_input_grad[2] and pool_map.dx is not None:
            x_rows = _to_rows(input.detach())
            dvx = ((pool_map.matrix(pool_map.dx) @ x_rows) * g_rows).sum(1).reshape(num_rois, out_h, out_w)
            dvy = ((pool_map.matrix(pool_map.dy) @ x_rows) * g_rows).sum(1).reshape(num_rois, out_h, out_w)
            grad_offset = torch.stack([
                ctx.gamma * roi_w[:, None, None] * dvx,
                ctx.gamma * roi_h[:, None, None] * dvy], dim=1)
        return grad_input, None, grad_offset, None, None, None, None


def deform_roi_pool_cpu(input: Tensor, rois: Tensor, offset: Optional[Tensor],
                        output_size: Union[int, Tuple[int, int]], spatial_scale: float = 1.0,
                        sampling_ratio: int = 0, gamma: float = 0.1) -> Tensor:
    """Plain-PyTorch ``mmcv.ops.deform_roi_pool`` (any device; see the module docstring)."""
    if rois.dim() != 2 or rois.size(1) != 5:
        raise ValueError("RoI must be (idx, x1, y1, x2, y2)!")
    out_h, out_w = _pair(output_size)
    if offset is not None and offset.numel() > 0:
        expected = (rois.size(0), 2, out_h, out_w)
        if tuple(offset.shape) != expected:
            raise ValueError(f"offset shape {tuple(offset.shape)} != {expected}")
    return _DeformRoIPoolCPU.apply(input, rois, offset, (int(out_h), int(out_w)),
                                   float(spatial_scale), int(sampling_ratio), float(gamma))


def deform_roi_pool(input: Tensor, rois: Tensor, offset: Optional[Tensor],
                    output_size: Union[int, Tuple[int, int]], spatial_scale: float = 1.0,
                    sampling_ratio: int = 0, gamma: float = 0.1) -> Tensor:
    """``mmcv.ops.deform_roi_pool`` signature: mmcv's kernel on CUDA, ours elsewhere."""
    if input.is_cuda:
        from mmcv.ops import deform_roi_pool as mmcv_deform_roi_pool

        return mmcv_deform_roi_pool(input, rois, offset, _pair(output_size), spatial_scale,
                                    sampling_ratio, gamma)
    return deform_roi_pool_cpu(input, rois, offset, output_size, spatial_scale,
                               sampling_ratio, gamma)


class DeformRoIPoolAnyDevice(nn.Module):
    """``mmcv.ops.DeformRoIPool`` (same constructor and forward) that also runs on CPU."""

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float = 1.0,
                 sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)

    def forward(self, input: Tensor, rois: Tensor, offset: Optional[Tensor] = None) -> Tensor:
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale,
                               self.sampling_ratio, self.gamma)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}")


# ------------------------------------------------------------------------------ RoIAlign
# RoIAlign is this op with no offset (aligned, avg; tests/unit/test_ops.py). mmcv 2.1's CPU
# roi_align backward is a scalar loop scattering four adds per sample, 16% of a Table 1 training
# iteration at `mini` (cProfile); the pooling map's backward is one CSR product. Forward +
# backward on that iteration's RoI shapes: 1.5-3.1x faster (`python -m seesaw_lvis bench ops`,
# reports/bench/ops.json). A forward alone (evaluation) wins on some shapes and loses on others,
# so only a CPU pass that builds a graph takes ours: evaluation and every CUDA run (full scale)
# keep mmcv's kernel.
def _roi_align_module():
    """mmcv's ``mmcv.ops.roi_align`` module (``mmcv.ops.roi_align`` as an attribute is the
    re-exported function)."""
    import mmcv.ops.roi_align  # noqa: F401

    return sys.modules["mmcv.ops.roi_align"]


def _mmcv_roi_align():
    return _PATCH.original()


def _takes_pooling_map(input: Tensor, rois: Tensor, pool_mode: str, aligned: bool) -> bool:
    """Whether ``roi_align`` sends this call to the pooling map: a CPU pass building a graph,
    mmcv's ``avg``/``aligned`` mode, float32/64, not traced (mmcv's op has the ONNX symbolic),
    and RoIs that mmcv accepts (with ``aligned`` it refuses a negative or NaN width or height:
    such a RoI is left to it, so training fails on it as evaluation does)."""
    if not (input.device.type == "cpu" and pool_mode == "avg" and aligned
            and input.dtype in (torch.float32, torch.float64) and torch.is_grad_enabled()
            and input.requires_grad and not torch.jit.is_tracing() and rois.size(0) > 0):
        return False
    return bool(((rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])).all())


def roi_align(input: Tensor, rois: Tensor, output_size: Union[int, Tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = 0, pool_mode: str = "avg",
              aligned: bool = True) -> Tensor:
    """``mmcv.ops.roi_align`` signature: the pooling map for a CPU pass with gradients
    (:func:`_takes_pooling_map`), mmcv's kernel otherwise."""
    if _takes_pooling_map(input, rois, pool_mode, aligned):
        return deform_roi_pool_cpu(input, rois, None, output_size, spatial_scale, sampling_ratio)
    return _mmcv_roi_align()(input, rois, output_size, spatial_scale, sampling_ratio, pool_mode,
                             aligned)


# Every ``RoIAlign`` layer (mmdet's RoI extractors) through :func:`roi_align`: its ``forward``
# looks ``mmcv.ops.roi_align.roi_align`` up at call time.
_PATCH = MmcvPatch(_roi_align_module, "roi_align", roi_align, reexported=True)
install, is_installed, uninstall = _PATCH.install, _PATCH.is_installed, _PATCH.uninstall

"""CARAFE on any device: a plain-PyTorch reassembly for CPU, mmcv's kernel on CUDA.

mmcv 2.1.0 ships CARAFE only as CUDA (and MLU) kernels; on CPU ``CARAFEPack`` fails with
"carafe_forward_impl: implementation for device cpu not found". This module provides

* :func:`carafe_cpu` -- the same computation as mmcv's ``carafe_forward`` /
  ``carafe_naive_forward`` CUDA kernels (``mmcv/ops/csrc/common/cuda/carafe*_kernel.cuh``)::

      out[n, c, y, x] = sum_{i, j < k} f[n, c, y // s + i - r, x // s + j - r]
                                       * m[n, g(c) * k * k + i * k + j, y, x]

  with ``r = (k - 1) // 2``, ``g(c) = c // (C / G)`` (channels split into ``G`` contiguous
  groups) and zero outside the input (out-of-range taps are skipped by the kernel, i.e. zero
  padding). The masks are used as given: CARAFEPack has already softmax-normalised them.
  For each of the ``s * s`` sub-pixel positions it loops over the ``k * k`` taps and
  accumulates input-sized products (mask broadcast over channels only), so peak memory is a
  few output-sized tensors (an ``unfold`` of the input would cost ``k * k`` input-sized
  copies, 25x for the mask head's ``k = 5``; measured here it was no faster). Gradients
  w.r.t. features and masks come from autograd.
* :func:`carafe_down_cpu` -- the downsampling counterpart (CARAFE++): output location
  ``(y', x')`` reassembles the ``k x k`` neighbourhood centred at ``(s * y', s * x')``.
  Used by :mod:`seesaw_lvis.models.necks.fpg_carafe`; it is device-agnostic (no mmcv kernel
  exists for it).
* :func:`carafe` -- dispatcher: mmcv's CUDA kernel for CUDA tensors, :func:`carafe_cpu`
  otherwise.

How ``type='carafe'`` (mmcv's ``CARAFEPack``) reaches the dispatcher: we *patch the method*
``mmcv.ops.carafe.CARAFEPack.feature_reassemble`` (see :func:`install`), rather than register
a subclass under a new name. Reasons:

1. The paper's configs must stay as they are: ``upsample_cfg=dict(type='carafe', ...)``.
   ``FCNMaskHead`` special-cases the *name* ``'carafe'`` (it injects ``channels`` and
   ``scale_factor``), so a new type name would change the config and lose that injection.
2. Re-registering ``'carafe'`` with ``force=True`` would replace mmcv's class for everyone
   (checkpoints, isinstance checks in mmcv/mmdet code) -- a bigger change than one method.
3. The patched method calls mmcv's original ``carafe`` op for CUDA tensors, so GPU runs are
   bit-for-bit unchanged; only the CPU path (which used to raise) is new. Parameters,
   state-dict keys and the kernel normaliser are mmcv's own.

:func:`install` is idempotent; ``seesaw_lvis.models.ops`` calls it at import, and
``seesaw_lvis.models`` imports ``ops`` (directly and through ``necks``), so any config with
``custom_imports=dict(imports=['seesaw_lvis.models'])`` has it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .patch import MmcvPatch

__all__ = ["carafe", "carafe_cpu", "carafe_down_cpu", "install", "is_installed", "uninstall"]


def _check(features: Tensor, masks: Tensor, kernel_size: int, group_size: int) -> None:
    if features.dim() != 4 or masks.dim() != 4:
        raise ValueError("features and masks must be 4-D (N, C, H, W)")
    if kernel_size < 1 or (kernel_size - 1) % 2 != 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if features.size(1) % group_size != 0:
        raise ValueError(f"channels {features.size(1)} not divisible by group_size {group_size}")
    if masks.size(1) != kernel_size * kernel_size * group_size:
        raise ValueError(f"masks have {masks.size(1)} channels, expected "
                         f"kernel_size**2 * group_size = {kernel_size ** 2 * group_size}")
    if masks.size(0) != features.size(0):
        raise ValueError("features and masks batch sizes differ")


def carafe_cpu(features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
               scale_factor: int) -> Tensor:
    """CARAFE upsampling in plain PyTorch (any device; autograd for both inputs).

    Args:
        features: (N, C, h, w).
        masks: (N, k*k*G, h*s, w*s) reassembly kernels (already normalised).
        kernel_size: k (odd). group_size: G. scale_factor: s (>= 1).
    Returns:
        (N, C, h*s, w*s).
    """
    _check(features, masks, kernel_size, group_size)
    s = int(scale_factor)
    if s < 1:
        raise ValueError("scale_factor must be >= 1")
    n, c, h, w = features.shape
    if masks.shape[-2:] != (h * s, w * s):
        raise ValueError(f"masks spatial size {tuple(masks.shape[-2:])} != features' x "
                         f"scale_factor {(h * s, w * s)}")
    k, g = kernel_size, group_size
    r = (k - 1) // 2
    cg = c // g
    masks = masks.to(features.dtype)
    fpad = F.pad(features, (r, r, r, r))  # zero padding == kernel skipping border taps
    taps = [fpad[:, :, i:i + h, j:j + w].reshape(n, g, cg, h, w)
            for i in range(k) for j in range(k)]
    # mask[n, g*k*k + t, y*s + dy, x*s + dx] -> (dy, dx, n, g, t, y, x)
    m = masks.reshape(n, g, k * k, h, s, w, s).permute(4, 6, 0, 1, 2, 3, 5)
    subs = []
    for dy in range(s):
        for dx in range(s):
            m_sub = m[dy, dx].contiguous()  # (n, g, t, h, w): broadcast over channels only
            acc = None
            for t, tap in enumerate(taps):
                term = tap * m_sub[:, :, t:t + 1]
                acc = term if acc is None else acc + term
            subs.append(acc)
    out = torch.stack(subs, 0).reshape(s, s, n, g, cg, h, w).permute(2, 3, 4, 5, 0, 6, 1)
    return out.reshape(n, c, h * s, w * s)


def carafe_down_cpu(features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
                    stride: int) -> Tensor:
    """Content-aware downsampling (CARAFE++): reassemble the k x k window at stride ``s``.

    ``out[n, c, y', x'] = sum_{i,j} f[n, c, s*y'+i-r, s*x'+j-r] * m[n, g*k*k+i*k+j, y', x']``
    with zero padding. The output size is ``ceil(h / s) x ceil(w / s)`` (what a stride-s,
    'same'-padded convolution gives), which ``masks`` must have.
    """
    _check(features, masks, kernel_size, group_size)
    s = int(stride)
    n, c, h, w = features.shape
    ho, wo = -(-h // s), -(-w // s)
    if masks.shape[-2:] != (ho, wo):
        raise ValueError(f"masks spatial size {tuple(masks.shape[-2:])} != ceil(input / "
                         f"stride) = {(ho, wo)}")
    k, g = kernel_size, group_size
    r = (k - 1) // 2
    cg = c // g
    masks = masks.to(features.dtype)
    # enough padding on the bottom/right for the last window at s*(ho-1) + r
    pad_b = max(0, s * (ho - 1) + r - (h - 1))
    pad_r = max(0, s * (wo - 1) + r - (w - 1))
    fpad = F.pad(features, (r, pad_r, r, pad_b))
    m = masks.reshape(n, g, k * k, ho, wo)
    out = None
    for i in range(k):
        for j in range(k):
            tap = fpad[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
            term = tap.reshape(n, g, cg, ho, wo) * m[:, :, i * k + j].unsqueeze(2)
            out = term if out is None else out + term
    return out.reshape(n, c, ho, wo)


def carafe(features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> Tensor:
    """Same signature as ``mmcv.ops.carafe``: mmcv's kernel on CUDA, ours elsewhere."""
    if features.is_cuda:
        from mmcv.ops.carafe import carafe as mmcv_carafe

        return mmcv_carafe(features, masks, kernel_size, group_size, scale_factor)
    return carafe_cpu(features, masks, kernel_size, group_size, scale_factor)


# --------------------------------------------------------------------------- CARAFEPack patch
def _feature_reassemble(self, x: Tensor, mask: Tensor) -> Tensor:
    return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)


def _carafe_pack():
    from mmcv.ops.carafe import CARAFEPack

    return CARAFEPack


# Make mmcv's ``CARAFEPack`` (``type='carafe'``) run on CPU: its ``feature_reassemble`` method.
_PATCH = MmcvPatch(_carafe_pack, "feature_reassemble", _feature_reassemble)
install, is_installed, uninstall = _PATCH.install, _PATCH.is_installed, _PATCH.uninstall

"""Normalized linear classifier of the Seesaw Loss report, eq. (3).

    z = tau * (W_i / ||W_i||)^T (x / ||x||) + b_i          (tau = 20 in the paper)

Both the class weight vectors and the input features are L2-normalised, at train and
test time (unlike tau-norm, which only rescales weights at test time).

mmdet 3.3 ships the same layer as ``NormedLinear`` (``mmdet/models/layers/
normed_predictor.py``) but spells the temperature ``tempearture``. ``NormedLinearTau``
is written here (not subclassed) with the argument named ``tau``; it keeps mmdet's
numerics exactly: the norms are offset by ``eps`` (``x / (||x|| + eps)``, eps = 1e-6),
weights start from N(0, 0.01) and the bias from 0, so that with the same parameters it
returns what ``NormedLinear(tempearture=tau)`` returns. ``tempearture=`` and
``temperature=`` are accepted as aliases of ``tau`` so mmdet-style configs also build.

Registered in mmdet's ``MODELS`` as ``TauNormedLinear``; a bbox head uses it with
``cls_predictor_cfg=dict(type='TauNormedLinear', tau=20)`` (the head adds
``in_features``/``out_features``). The normalisation runs in float32 under autocast
(the matmul itself follows autocast), so fp16 features with tiny or huge norms are safe.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS

__all__ = ["NormedLinearTau"]


@MODELS.register_module(name="TauNormedLinear")
class NormedLinearTau(nn.Linear):
    """``z = tau * normalize(W) normalize(x) + b`` (eq. 3).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        tau: temperature (paper: 20).
        eps: added to each L2 norm before dividing (mmdet: 1e-6).
        tempearture, temperature: aliases of ``tau`` (mmdet's spelling, and the right one).
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 tau: float = 20.0,
                 eps: float = 1e-6,
                 tempearture: Optional[float] = None,
                 temperature: Optional[float] = None,
                 device=None,
                 dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        aliases = [v for v in (tempearture, temperature) if v is not None]
        if aliases:
            if len(set(aliases)) > 1 or (tau != 20.0 and tau != aliases[0]):
                raise ValueError("give the temperature once: tau, tempearture or temperature")
            tau = aliases[0]
        self.tau = float(tau)
        self.eps = float(eps)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=0.01)
        if self.bias is not None:
            nn.init.constant_(self.bias, 0.0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        with torch.autocast(device_type=x.device.type, enabled=False):
            wf = w.float()
            xf = x.float()
            w_n = wf / (wf.norm(dim=1, keepdim=True) + self.eps)
            x_n = xf / (xf.norm(dim=-1, keepdim=True) + self.eps) * self.tau
        if torch.is_autocast_enabled(x.device.type):
            return F.linear(x_n, w_n, self.bias)  # autocast picks the matmul dtype
        return F.linear(x_n.to(x.dtype), w_n.to(w.dtype), self.bias)

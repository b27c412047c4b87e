"""Equalization Loss (Tan et al., "Equalization Loss for Long-Tailed Object Recognition",
CVPR 2020), the LVIS 2019 winner that Table 1 of the Seesaw report compares against.

Sigmoid cross-entropy over the C foreground classes (a background proposal has an
all-zero target), each term weighted by

    w_j = 1 - E(r) * T_lambda(f_j) * (1 - y_j)

* ``E(r)`` = 1 for a foreground proposal, 0 for a background one (background proposals
  keep suppressing every class, rare ones included);
* ``T_lambda(f) = 1`` if ``f < lambda`` else 0, ``f_j`` = frequency of category j = the
  fraction of training images that contain it (LVIS ``image_count / num_images``);
* ``y_j`` the one-hot target: the positive term of a sample is never removed.

So a foreground proposal of class i does not push down the logits of rare classes j != i.

lambda
------
* ``LAMBDA_LVIS_V05 = 1.76e-3``: the paper's choice for LVIS v0.5 (its lambda ablation);
  the authors' detectron2 code (github.com/tztztztztz/eql.detectron2,
  ``projects/EQL/eql/cfg.py``: ``cfg.MODEL.ROI_HEADS.LAMBDA = 0.00177``) rounds it to
  1.77e-3.
* ``LAMBDA_LVIS_V1 = 1.1e-3``: the first author's LVIS v1 setting in the EQLv2 code base
  (github.com/tztztztztz/eqlv2, ``configs/end2end/eql_r50_8x2_1x.py`` and
  ``configs/lvis/mask_rcnn_r50_fpn_sample1e-3_mstrain_eql_1x_lvis_v1.py``:
  ``type="EQL", lambda_=0.0011, version="v1"``). This is the default here, since the
  Seesaw report's Table 1 is on LVIS v1.

Interface (mmdet 3.3 BBoxHead)
------------------------------
Registered in mmdet's ``MODELS`` as ``EQLoss`` (mmdet has ``EQLV2Loss`` only).
``forward(cls_score, label, weight=None, avg_factor=None, reduction_override=None)``.
mmdet 3.3's ``BBoxHead`` always gives its classifier ``num_classes + 1`` outputs unless
the loss sets ``custom_cls_channels``; with a plain sigmoid loss it would still apply a
softmax at test time. So this loss sets the three ``custom_*`` flags:
``get_cls_channels`` keeps the stock width ``num_classes + 1`` (the last column is
ignored: zero loss, zero gradient; keeps fc_cls shape-compatible with CE checkpoints),
``get_activation`` returns ``sigmoid`` of the C class logits with a 0 background column
appended (as the authors' ``predict_probs``), ``get_accuracy`` the top-1 accuracy where a
proposal counts as background when no class has probability >= 0.5. ``cls_score`` of
width ``num_classes`` is accepted too.

Reduction: the per-proposal loss is the sum over classes (the paper's
L = -sum_j w_j [y_j log p_j + (1 - y_j) log(1 - p_j)]); ``'mean'`` averages it over
proposals (the authors' ``sum / n_i``) or divides the total by ``avg_factor`` (mmdet's
BBoxHead passes the number of sampled proposals, i.e. the same thing); ``'sum'`` sums;
``'none'`` returns the weighted ``[N, C]`` element losses. ``weight`` is a per-proposal
``[N]`` (or element-wise ``[N, C]``) weight. Computed in float32 under autocast.

Initialisation note: with sigmoid over 1203 classes the classifier bias should start at
the prior of the authors' code (pi = 0.001, bias = -log((1 - pi) / pi)); in mmdet use
``init_cfg=dict(type='Normal', std=0.01, bias_prob=0.001, override=dict(name='fc_cls'))``.
The authors' code calls that prior "roughly 1 / num_classes": on another category count
``configs.resolve`` moves it to the same share (``data.frequency.lvis_v1_prior_for``).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS

from .seesaw_loss import accuracy_top1

__all__ = ["EQLoss", "load_class_freq", "LAMBDA_LVIS_V05", "LAMBDA_LVIS_V1"]

LAMBDA_LVIS_V05 = 1.76e-3
LAMBDA_LVIS_V1 = 1.1e-3
_F32_EPS = torch.finfo(torch.float32).eps


def _freqs_from_categories(categories: Sequence[dict], num_images: int) -> List[float]:
    if not num_images or num_images <= 0:
        raise ValueError("num_images must be a positive integer")
    cats = sorted(categories, key=lambda c: c["id"]) if all("id" in c for c in categories) \
        else list(categories)
    return [float(c["image_count"]) / float(num_images) for c in cats]


def load_class_freq(path: Union[str, os.PathLike]) -> List[float]:
    """Per-class image frequencies ``f_j`` from a JSON or CSV file, in label order.

    JSON, any of:
      * a list of frequencies;
      * ``{"class_freq": [...]}``;
      * ``{"num_images": n, "categories": [{"id", "image_count"}, ...]}``;
      * an LVIS annotation file (``categories`` with ``image_count``, ``images``): then
        ``num_images = len(images)``.
      Categories are sorted by ``id`` (mmdet's label order for LVIS).
    CSV with a header: a ``freq`` column, or ``image_count`` plus ``num_images`` (a
    column, constant) ; rows sorted by ``id`` when that column exists.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "id" in rows[0]:
            rows.sort(key=lambda r: int(r["id"]))
        if rows and "freq" in rows[0]:
            return [float(r["freq"]) for r in rows]
        if rows and "image_count" in rows[0] and "num_images" in rows[0]:
            return [float(r["image_count"]) / float(r["num_images"]) for r in rows]
        raise ValueError(f"{path}: CSV needs a 'freq' column or 'image_count' and 'num_images'")
    with path.open(encoding="utf-8") as f:
        obj = json.load(f)
    if isinstance(obj, list):
        return [float(v) for v in obj]
    if isinstance(obj, dict):
        if "class_freq" in obj:
            return [float(v) for v in obj["class_freq"]]
        if "categories" in obj:
            n = obj.get("num_images")
            if n is None and "images" in obj:
                n = len(obj["images"])
            return _freqs_from_categories(obj["categories"], n)
    raise ValueError(f"{path}: no class frequencies found (see load_class_freq's docstring)")


@MODELS.register_module(name="EQLoss")
class EQLoss(nn.Module):
    """Equalization Loss (sigmoid), see the module docstring.

    Args:
        use_sigmoid: must be True.
        num_classes: number of foreground classes C.
        lambda_: frequency threshold (default ``LAMBDA_LVIS_V1`` = 1.1e-3).
        class_freq: the C frequencies ``f_j`` (image_count / num_images) in label order.
        freq_file: or a JSON/CSV file to read them from (``load_class_freq``).
        reduction: ``'none' | 'mean' | 'sum'``.
        loss_weight: scale of the loss.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 num_classes: int = 1203,
                 lambda_: float = LAMBDA_LVIS_V1,
                 class_freq: Optional[Sequence[float]] = None,
                 freq_file: Optional[Union[str, os.PathLike]] = None,
                 reduction: str = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        assert use_sigmoid, "EQL is a sigmoid loss: use_sigmoid must be True"
        if (class_freq is None) == (freq_file is None):
            raise ValueError("EQLoss needs exactly one of class_freq or freq_file")
        freq = list(class_freq) if class_freq is not None else load_class_freq(freq_file)
        if len(freq) != num_classes:
            raise ValueError(f"got {len(freq)} class frequencies for {num_classes} classes")
        freq_t = torch.tensor(freq, dtype=torch.float64)
        if not bool(((freq_t >= 0) & (freq_t <= 1)).all()):
            raise ValueError("class frequencies must lie in [0, 1] (image_count / num_images)")
        self.use_sigmoid = True
        self.num_classes = int(num_classes)
        self.lambda_ = float(lambda_)
        self.freq_file = None if freq_file is None else str(freq_file)
        self.reduction = reduction
        self.loss_weight = loss_weight
        # from config, not learnt: kept out of the state dict
        self.register_buffer("class_freq", freq_t.float(), persistent=False)
        self.register_buffer("tail_mask", (freq_t < self.lambda_).float(), persistent=False)
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True

    @property
    def num_tail_classes(self) -> int:
        return int(self.tail_mask.sum().item())

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, lambda_={self.lambda_}, "
                f"tail_classes={self.num_tail_classes}, reduction={self.reduction!r}, "
                f"loss_weight={self.loss_weight}")

    # -- mmdet BBoxHead hooks -----------------------------------------------------
    def get_cls_channels(self, num_classes: int) -> int:
        assert num_classes == self.num_classes
        return num_classes + 1

    def _class_logits(self, cls_score: Tensor) -> Tensor:
        width = cls_score.size(-1)
        if width not in (self.num_classes, self.num_classes + 1):
            raise ValueError(f"cls_score has {width} columns; expected {self.num_classes} "
                             f"or {self.num_classes + 1}")
        return cls_score[..., :self.num_classes]

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """``[..., C + 1]``: sigmoid of the class logits, 0 for background."""
        prob = torch.sigmoid(self._class_logits(cls_score).float())
        return torch.cat([prob, prob.new_zeros(prob.shape[:-1] + (1,))], dim=-1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        prob = self.get_activation(cls_score)[..., :-1]
        best, pred = prob.max(dim=-1)
        pred = torch.where(best >= 0.5, pred, torch.full_like(pred, self.num_classes))
        onehot = F.one_hot(pred, self.num_classes + 1).float()
        return dict(acc=accuracy_top1(onehot, labels))

    # -- loss --------------------------------------------------------------------
    def eql_weights(self, labels: Tensor) -> Tensor:
        """``w [N, C]``: 0 where a foreground sample meets a tail class other than its own."""
        C = self.num_classes
        fg = ((labels >= 0) & (labels < C)).float()[:, None]  # E(r)
        return 1.0 - fg * self.tail_mask[None, :] * (1.0 - self._targets(labels))

    def _targets(self, labels: Tensor) -> Tensor:
        """One-hot over the C classes; background (label C, or < 0) is all zeros."""
        C = self.num_classes
        labels = torch.where(labels < 0, torch.full_like(labels, C), labels)
        return F.one_hot(labels, C + 1)[:, :C].float()

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        assert reduction_override in (None, "none", "mean", "sum")
        reduction = reduction_override if reduction_override else self.reduction
        label = label.reshape(-1).long()
        with torch.autocast(device_type=cls_score.device.type, enabled=False):
            x = self._class_logits(cls_score).float()
            target = self._targets(label)
            w = self.eql_weights(label)
            loss = F.binary_cross_entropy_with_logits(x, target, reduction="none") * w
            if weight is not None:
                weight = weight.float()
                loss = loss * (weight[:, None] if weight.dim() == 1 else weight)
            if reduction == "none":
                out = loss
            elif reduction == "sum":
                if avg_factor is not None:
                    raise ValueError('avg_factor can not be used with reduction="sum"')
                out = loss.sum()
            elif avg_factor is None:
                out = loss.sum() / max(loss.size(0), 1)
            else:
                out = loss.sum() / (avg_factor + _F32_EPS)
        return self.loss_weight * out

"""Seesaw Loss (Wang et al., LVIS Challenge 2020 report, eq. 1-2; CVPR 2021).

Numerically the same loss as ``mmdet.models.losses.SeesawLoss`` (mmdet 3.3.0), in one
vectorised tensor program, with the cumulative class counts summed over all ranks.

Definition (what mmdet 3.3 computes, and so what we compute)
-------------------------------------------------------------
The classifier has ``num_classes + 2`` outputs: ``num_classes`` class logits followed
by two objectness logits ``[foreground, background]``. Labels are in
``[0, num_classes]``; ``num_classes`` is background.

* ``cum_samples`` (``num_classes + 1`` counts, background last) is incremented by the
  label histogram of every call *before* the loss is computed; every label counts,
  including background and samples whose ``label_weights`` are 0.
* Objectness: softmax cross-entropy of the last two logits against
  ``obj_label = (label == num_classes)`` (0 = foreground), over all samples.
* Classes: only foreground samples. For a sample of class ``i`` the logit of every
  negative class ``j`` is shifted by ``log S_ij``; ``S_ij = M_ij * C_ij`` and then
  ordinary softmax cross-entropy over the ``num_classes`` logits.

  - mitigation (p > 0): ``M_ij = (N_j / N_i) ** p`` if ``N_j < N_i`` else 1, with
    ``N = cum_samples[:num_classes].clamp(min=1)`` (background count never enters);
  - compensation (q > 0): with ``s = softmax(z).detach()``,
    ``C_ij = (s_j / max(s_i, eps)) ** q`` if that ratio is > 1 else 1.

  Both factors are constants for autograd (counts; detached scores), ``S_ii = 1``.
  The gradient w.r.t. the class logits is therefore ``softmax(z + log S) - onehot``.
* Reduction as mmdet's ``weight_reduce_loss``: the class term is weighted by
  ``label_weights`` of the foreground samples and divided by ``avg_factor + eps_f32``
  (or averaged over the foreground samples when ``avg_factor`` is None); with no
  foreground sample the class term is an exact 0 (not multiplied by ``loss_weight``,
  as in mmdet).

How we compute it
-----------------
In log space, which is cheaper and cannot overflow:
``log M_ij = min(p log N_j, p log N_i) - p log N_i`` and
``log C_ij = q * max(ls_j - max(ls_i, log eps), 0)`` with ``ls = log_softmax(z)``;
both are exactly 0 at ``j = i``, so no one-hot mask is needed. The math runs in float32
whatever the autocast dtype of the logits (fp16/bf16 logits are upcast; autocast is
disabled inside), so extreme logits give neither NaN nor inf. Forward and backward of
the class and objectness terms are one ``autograd.Function`` that writes the gradient
straight into a single ``[N, num_classes + 2]`` buffer.

Differences from mmdet 3.3 (none of them change the loss):

* ``cum_samples`` is int64 (exact beyond 2**24 samples, unaffected by ``model.half()``);
  float checkpoints written by mmdet's SeesawLoss load into it.
* Counts are a label histogram (``torch.bincount`` on CPU; a scatter-add on CUDA,
  where ``bincount`` would sync with the host), not a ``unique()`` loop with ``.item()``.
* ``sync_counts=True``: under ``torch.distributed`` with world size > 1 the per-call
  histogram is all-reduced (SUM) before it is added, so every rank holds the *global*
  counts N_i of the paper. mmdet keeps per-rank counts (mmengine wraps models with
  ``broadcast_buffers=False``). Only the counts are synchronised; the loss stays per
  rank. Every rank must call the loss equally often (it is a collective), which is the
  case for mmdet's RoI heads.
* On CUDA the class term is computed on all rows with background rows masked out
  (no ``nonzero``, hence no host sync); on CPU only the foreground rows are gathered
  (cheaper). ``reduction='none'`` always gathers, so its shape matches mmdet's
  (one value per foreground sample). ``compact_positives`` overrides the choice.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS

__all__ = ["SeesawLoss", "seesaw_log_factors", "label_histogram", "accuracy_top1"]

_F32_EPS = torch.finfo(torch.float32).eps  # the eps of mmdet's weight_reduce_loss


def label_histogram(labels: Tensor, num_bins: int, scatter: Optional[bool] = None) -> Tensor:
    """int64 histogram of ``labels`` (values in ``[0, num_bins)``) with ``num_bins`` bins.

    CPU: ``torch.bincount``. CUDA: ``bincount`` reads ``labels.max()`` back to the host
    to size its output, so a scatter-add into a fixed-size buffer is used instead
    (integer atomics: deterministic, no host sync). ``scatter`` forces either method.
    """
    labels = labels.reshape(-1).long()
    if scatter is None:
        scatter = labels.is_cuda
    if scatter:
        counts = torch.zeros(num_bins, dtype=torch.long, device=labels.device)
        return counts.index_add_(0, labels, torch.ones_like(labels))
    counts = torch.bincount(labels, minlength=num_bins)
    if counts.numel() != num_bins:
        raise ValueError(f"labels must lie in [0, {num_bins}); got max {int(labels.max())}")
    return counts


def seesaw_log_factors(logits: Tensor, labels: Tensor, cum_samples: Tensor, p: float, q: float,
                       eps: float) -> Optional[Tensor]:
    """``log S`` of eq. (2) times the CVPR compensation factor, for each row.

    Args:
        logits: float32 ``[M, C]`` class logits (treated as constants).
        labels: ``[M]`` labels in ``[0, C)``.
        cum_samples: ``[C]`` cumulative counts (any dtype).
    Returns:
        float32 ``[M, C]`` additive logit adjustment (0 on the label column), or None when
        ``p <= 0 and q <= 0``.
    """
    adj = None
    if q > 0:
        ls = torch.log_softmax(logits, dim=1)
        self_ls = ls.gather(1, labels[:, None]).clamp_(min=math.log(eps))
        adj = ls.sub_(self_ls).clamp_(min=0.0).mul_(q)
    if p > 0:
        p_log_n = cum_samples.to(torch.float32).clamp(min=1.0).log_().mul_(p)  # [C]
        p_log_ni = p_log_n.gather(0, labels)[:, None]  # [M, 1]
        mit = torch.minimum(p_log_n[None, :], p_log_ni).sub_(p_log_ni)
        adj = mit if adj is None else adj.add_(mit)
    return adj


class _SeesawCE(torch.autograd.Function):
    """Per-row class and objectness cross-entropies with a hand-written backward.

    Inputs: ``cls_score`` ``[N, C + 2]`` (any float dtype), ``labels`` ``[N]`` in
    ``[0, C]``, ``rows`` (None: all rows, background rows get label 0 and must be
    masked by the caller; else the int64 indices of the foreground rows), the counts.
    Returns ``(ce_classes [M], ce_objectness [N])`` in float32.
    """

    @staticmethod
    def forward(ctx, cls_score, labels, rows, cum_samples, num_classes, p, q, eps):
        C = num_classes
        x = cls_score.detach()
        if rows is None:
            z = torch.empty((x.size(0), C), dtype=torch.float32, device=x.device)
            z.copy_(x[:, :C])  # an owned float32 copy: modified in place below
            lab = torch.where(labels < C, labels, torch.zeros_like(labels))
        else:
            z = x[:, :C].index_select(0, rows)  # a new tensor
            if z.dtype != torch.float32:
                z = z.float()
            lab = labels.index_select(0, rows)
        adj = seesaw_log_factors(z, lab, cum_samples, p, q, eps)
        if adj is not None:
            z.add_(adj)
            del adj
        ls = torch.log_softmax(z, dim=1)
        del z
        ce_cls = ls.gather(1, lab[:, None]).squeeze(1).neg_()
        prob = ls.exp_()  # softmax of the adjusted logits: the gradient, up to -onehot

        obj_lab = (labels == C).long()
        lo = torch.log_softmax(x[:, C:].to(torch.float32), dim=1)
        ce_obj = lo.gather(1, obj_lab[:, None]).squeeze(1).neg_()
        prob_obj = lo.exp_()

        ctx.save_for_backward(prob, lab, prob_obj, obj_lab, rows)
        ctx.shape = x.shape
        ctx.dtype = x.dtype
        ctx.C = C
        return ce_cls, ce_obj

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_cls, g_obj):
        prob, lab, prob_obj, obj_lab, rows = ctx.saved_tensors
        C = ctx.C
        grad = torch.zeros(ctx.shape, dtype=torch.float32, device=prob.device)
        # d ce / d z = softmax(z + log S) - onehot  (S is a constant), times g. The saved
        # tensors are not modified, so a retain_graph=True second backward is still right.
        if g_cls is not None and prob.numel() > 0:
            g = g_cls.to(torch.float32)[:, None]
            if rows is None:
                dst = grad[:, :C]
                torch.mul(prob, g, out=dst)
                dst.scatter_add_(1, lab[:, None], g.neg())
            else:
                tmp = torch.mul(prob, g).scatter_add_(1, lab[:, None], g.neg())
                grad[:, :C].index_copy_(0, rows, tmp)
        if g_obj is not None and prob_obj.numel() > 0:
            g = g_obj.to(torch.float32)[:, None]
            grad[:, C:] = torch.mul(prob_obj, g).scatter_add_(1, obj_lab[:, None], g.neg())
        if ctx.dtype != torch.float32:
            grad = grad.to(ctx.dtype)
        return grad, None, None, None, None, None, None, None


def _reduce(loss: Tensor, weight: Optional[Tensor], reduction: str, avg_factor) -> Tensor:
    """mmdet 3.3 ``weight_reduce_loss``."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / (avg_factor + _F32_EPS)
    if reduction != "none":
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


def accuracy_top1(pred: Tensor, target: Tensor) -> Tensor:
    """Top-1 accuracy in percent, shape ``(1,)``, as ``mmdet.models.losses.accuracy``."""
    if pred.size(0) == 0:
        return pred.new_tensor(0.0)
    _, label = pred.topk(1, dim=1)
    correct = label.t().eq(target.view(1, -1)).reshape(-1).float().sum(0, keepdim=True)
    return correct.mul_(100.0 / pred.size(0))


@MODELS.register_module(name="DistSeesawLoss")
class SeesawLoss(nn.Module):
    """Seesaw Loss, registered in mmdet's ``MODELS`` as ``DistSeesawLoss``.

    Same constructor arguments, forward signature, output keys and helper methods
    (``get_cls_channels``, ``get_activation``, ``get_accuracy``) as mmdet 3.3's
    ``SeesawLoss``; see the module docstring for what differs (counts only).

    Args:
        use_sigmoid: must be False (softmax only), as in mmdet.
        p: exponent of the mitigation factor (paper: 0.8).
        q: exponent of the compensation factor (CVPR version; 0 disables it).
        num_classes: number of foreground classes (1203 for LVIS v1).
        eps: lower bound of the self score in the compensation factor.
        reduction: ``'none' | 'mean' | 'sum'``.
        loss_weight: weight of both terms.
        return_dict: return ``{'loss_cls_objectness', 'loss_cls_classes'}`` (True) or
            their sum.
        sync_counts: all-reduce (SUM) the per-call class histogram over the default
            process group before accumulating it (no-op when not distributed).
    """

    #: None: gather the foreground rows on CPU, mask on CUDA (no host sync).
    compact_positives: Optional[bool] = None

    def __init__(self,
                 use_sigmoid: bool = False,
                 p: float = 0.8,
                 q: float = 2.0,
                 num_classes: int = 1203,
                 eps: float = 1e-2,
                 reduction: str = "mean",
                 loss_weight: float = 1.0,
                 return_dict: bool = True,
                 sync_counts: bool = True) -> None:
        super().__init__()
        assert not use_sigmoid, "SeesawLoss is a softmax loss: use_sigmoid must be False"
        self.use_sigmoid = False
        self.p = float(p)
        self.q = float(q)
        self.num_classes = int(num_classes)
        self.eps = float(eps)
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.return_dict = return_dict
        self.sync_counts = bool(sync_counts)
        # N_i of eq. (2); background count last. Persistent: checkpoints restore it.
        self.register_buffer("cum_samples", torch.zeros(self.num_classes + 1, dtype=torch.long))
        # read by mmdet's BBoxHead
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, p={self.p}, q={self.q}, eps={self.eps}, "
                f"reduction={self.reduction!r}, loss_weight={self.loss_weight}, "
                f"sync_counts={self.sync_counts}")

    # -- mmdet BBoxHead hooks -----------------------------------------------------
    def _split_cls_score(self, cls_score: Tensor) -> Tuple[Tensor, Tensor]:
        assert cls_score.size(-1) == self.num_classes + 2
        return cls_score[..., :-2], cls_score[..., -2:]

    def get_cls_channels(self, num_classes: int) -> int:
        assert num_classes == self.num_classes
        return num_classes + 2

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Eq. (4): ``softmax(classes) * P(fg)``, with ``P(bg)`` appended: ``[..., C + 1]``."""
        classes, objectness = self._split_cls_score(cls_score.float())
        score_classes = F.softmax(classes, dim=-1)
        score_obj = F.softmax(objectness, dim=-1)
        return torch.cat([score_classes * score_obj[..., :1], score_obj[..., 1:]], dim=-1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        pos = labels < self.num_classes
        obj_labels = (labels == self.num_classes).long()
        classes, objectness = self._split_cls_score(cls_score)
        return dict(acc_objectness=accuracy_top1(objectness, obj_labels),
                    acc_classes=accuracy_top1(classes[pos], labels[pos]))

    # -- counts ------------------------------------------------------------------
    @torch.no_grad()
    def update_counts(self, labels: Tensor) -> Tensor:
        """Add this call's label histogram (summed over ranks if ``sync_counts``)."""
        counts = label_histogram(labels.to(self.cum_samples.device), self.num_classes + 1)
        if (self.sync_counts and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        self.cum_samples += counts
        return counts

    # -- loss --------------------------------------------------------------------
    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Union[Tensor, Dict[str, Tensor]]:
        """Args:
            cls_score: ``[N, num_classes + 2]`` logits (any float dtype).
            labels: ``[N]`` int64 in ``[0, num_classes]`` (``num_classes`` = background).
            label_weights: ``[N]`` sample weights (default 1).
            avg_factor: divisor of the ``'mean'`` reduction (mmdet semantics).
            reduction_override: ``None | 'none' | 'mean' | 'sum'``.
        """
        assert reduction_override in (None, "none", "mean", "sum")
        reduction = reduction_override if reduction_override else self.reduction
        C = self.num_classes
        assert cls_score.dim() == 2 and cls_score.size(-1) == C + 2, cls_score.shape
        labels = labels.reshape(-1).long()

        self.update_counts(labels)

        pos = labels < C
        weights = (label_weights.float() if label_weights is not None
                   else torch.ones(labels.shape, dtype=torch.float32, device=labels.device))
        compact = self.compact_positives
        if compact is None:
            compact = not cls_score.is_cuda
        if reduction == "none":
            compact = True

        with torch.autocast(device_type=cls_score.device.type, enabled=False):
            if compact:
                rows = torch.nonzero(pos).squeeze(1)
                ce_cls, ce_obj = _SeesawCE.apply(cls_score, labels, rows, self.cum_samples[:C],
                                                 C, self.p, self.q, self.eps)
                if rows.numel() == 0:
                    # as mmdet: cls_score_classes[pos_inds].sum(), an exact 0 with a graph
                    loss_classes = cls_score[:0, :C].sum().float()
                else:
                    loss_classes = self.loss_weight * _reduce(
                        ce_cls, weights.index_select(0, rows), reduction, avg_factor)
            else:
                ce_cls, ce_obj = _SeesawCE.apply(cls_score, labels, None, self.cum_samples[:C],
                                                 C, self.p, self.q, self.eps)
                posf = pos.float()
                w = weights * posf
                if reduction == "sum":
                    loss_classes = (ce_cls * w).sum()
                elif avg_factor is None:  # mean over foreground samples (0 when none)
                    loss_classes = (ce_cls * w).sum() / posf.sum().clamp(min=1.0)
                else:
                    loss_classes = (ce_cls * w).sum() / (avg_factor + _F32_EPS)
                # mmdet does not scale the all-background zero; 0 * w is 0 either way
                loss_classes = self.loss_weight * loss_classes
            loss_objectness = self.loss_weight * _reduce(ce_obj, weights, reduction, avg_factor)

        if self.return_dict:
            return dict(loss_cls_objectness=loss_objectness, loss_cls_classes=loss_classes)
        return loss_classes + loss_objectness

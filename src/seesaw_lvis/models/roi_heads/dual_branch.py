"""Dual-branch finetuning with score averaging (report, section 2.2, "Finetuning with
Repeat Factor Sampling").

"We freeze all components in the original model. Then we finetune a new classification
branch for each cascading stage on the fixed model using repeat factor sampler by 1x
schedule. During inference, the classification scores of original classification branches
and the scores of finetuned classification branches are averaged."

Pieces:

* :class:`ClsBranch`: a new classification branch with the structure of a stage's original
  one, i.e. everything on the classification path after RoI pooling: for mmdet's
  BBoxHead/ConvFCBBoxHead (e.g. Shared2FC) the shared convs/fcs, the cls convs/fcs and the
  predictor on the RoI feature; for :class:`TSDBBoxHead` the TSD classification tower and
  predictor on the deformably re-pooled classification feature (the frozen head's
  ``delta_c`` offsets and pooling are reused). It owns a copy of the stage's ``loss_cls``
  (fresh buffers: Seesaw's class counts restart from the finetune sampler's distribution).
  HTCLiteRoIHead builds one per stage when ``finetune_cls_branch=True``.
* Initialisation (``ft_branch_init`` of HTCLiteRoIHead): ``'copy'`` (default) copies the
  original branch's weights into the new one at the first training step, after the runner
  has loaded the Seesaw row's checkpoint (which lacks ``roi_head.ft_cls_branches.*``: the
  missing-keys warning is expected). A persistent buffer ``roi_head.ft_initialized``
  records it, so resuming or testing a finetuned checkpoint never re-copies. ``'fresh'``
  keeps the branch's own random init (Xavier fcs, N(0, 0.01) predictor).
* :func:`freeze_except` / :func:`set_frozen_norms_eval` and :class:`FreezeForFinetuneHook`:
  freeze every parameter but the new branches and keep every frozen BN layer in eval mode
  (running statistics unchanged). Under DDP the config needs
  ``find_unused_parameters = True`` (the freeze happens after the wrapper is built; frozen
  parameters then keep ``grad=None`` and optimizers skip them, weight decay included).
* :func:`average_scores`: the inference rule, mean of the two branches' activated scores.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterable, Sequence

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModule, is_model_wrapper
from torch import Tensor

from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead
from mmdet.models.roi_heads.bbox_heads.convfc_bbox_head import ConvFCBBoxHead
from mmdet.registry import HOOKS

DEFAULT_TRAINABLE = ('roi_head.ft_cls_branches.', )


class ClsBranch(BaseModule):
    """A copy of one stage's classification path (see module docstring)."""

    # names of the source head's submodules copied, per kind
    _PARTS = {
        'tsd': ('tsd_cls_fcs', 'tsd_fc_cls'),
        'convfc': ('shared_convs', 'shared_fcs', 'cls_convs', 'cls_fcs', 'fc_cls'),
        'bbox': ('fc_cls', ),
    }

    def __init__(self, bbox_head: BBoxHead) -> None:
        super().__init__()
        if getattr(bbox_head, 'requires_roi_context', False):
            self.kind = 'tsd'
            self.fcs = copy.deepcopy(bbox_head.tsd_cls_fcs)
            self.fc_cls = copy.deepcopy(bbox_head.tsd_fc_cls)
        elif isinstance(bbox_head, ConvFCBBoxHead):
            self.kind = 'convfc'
            for name in self._PARTS['convfc']:
                setattr(self, name, copy.deepcopy(getattr(bbox_head, name)))
            self.num_shared_fcs = bbox_head.num_shared_fcs
        elif isinstance(bbox_head, BBoxHead):
            self.kind = 'bbox'
            self.fc_cls = copy.deepcopy(bbox_head.fc_cls)
        else:
            raise TypeError(f'no classification branch known for {type(bbox_head)}')
        fc_names = {'tsd': ['fcs'], 'convfc': ['shared_fcs', 'cls_fcs'], 'bbox': []}[self.kind]
        self.init_cfg = [dict(type='Normal', std=0.01, override=dict(name='fc_cls'))]
        if fc_names:
            self.init_cfg.append(dict(type='Xavier', distribution='uniform',
                                      override=[dict(name=n) for n in fc_names]))
        self.with_avg_pool = getattr(bbox_head, 'with_avg_pool', False)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.relu = nn.ReLU(inplace=False)
        self.loss_cls = copy.deepcopy(bbox_head.loss_cls)
        for buf_name, buf in self.loss_cls.named_buffers():
            buf.zero_()

    def _src_dst(self, bbox_head: BBoxHead):
        names = self._PARTS[self.kind]
        if self.kind == 'tsd':
            return [(bbox_head.tsd_cls_fcs, self.fcs), (bbox_head.tsd_fc_cls, self.fc_cls)]
        return [(getattr(bbox_head, n), getattr(self, n)) for n in names]

    @torch.no_grad()
    def copy_from(self, bbox_head: BBoxHead) -> None:
        """Copy the original branch's weights (in place: optimizer references stay valid)."""
        for src, dst in self._src_dst(bbox_head):
            for (_, p_dst), (_, p_src) in zip(dst.state_dict(keep_vars=True).items(),
                                              src.state_dict(keep_vars=True).items()):
                p_dst.copy_(p_src)

    def _pool_flat(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
        return x

    def forward(self, bbox_out: Dict[str, Tensor]) -> Tensor:
        """Class logits from a stage's forward output (``bbox_feats`` or, for TSD,
        ``cls_feats``)."""
        if self.kind == 'tsd':
            x = bbox_out['cls_feats'].flatten(1)
            for fc in self.fcs:
                x = self.relu(fc(x))
            return self.fc_cls(x)
        x = bbox_out['bbox_feats']
        if self.kind == 'bbox':
            return self.fc_cls(self._pool_flat(x))
        for conv in self.shared_convs:
            x = conv(x)
        if self.num_shared_fcs > 0:
            x = self._pool_flat(x)
            for fc in self.shared_fcs:
                x = self.relu(fc(x))
        for conv in self.cls_convs:
            x = conv(x)
        x = self._pool_flat(x)
        for fc in self.cls_fcs:
            x = self.relu(fc(x))
        return self.fc_cls(x)


def average_scores(scores_orig: Tensor, scores_ft: Tensor) -> Tensor:
    """The inference rule: mean of the original and finetuned branches' activated scores."""
    return (scores_orig + scores_ft) / 2


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def _trainable(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(p) or (name + '.').startswith(p) for p in prefixes)


def freeze_except(model: nn.Module,
                  trainable: Sequence[str] = DEFAULT_TRAINABLE) -> Dict[str, int]:
    """``requires_grad=False`` for every parameter whose name doesn't start with one of
    ``trainable``; returns the counts of trainable and frozen parameters."""
    model = _unwrap(model)
    n_train = n_frozen = 0
    for name, p in model.named_parameters():
        keep = _trainable(name, trainable)
        p.requires_grad_(keep)
        if keep:
            n_train += p.numel()
        else:
            n_frozen += p.numel()
    if n_train == 0:
        raise ValueError(f'no parameter matches {list(trainable)}: is '
                         'roi_head.finetune_cls_branch=True in the config?')
    return dict(trainable=n_train, frozen=n_frozen)


def set_frozen_norms_eval(model: nn.Module,
                          trainable: Sequence[str] = DEFAULT_TRAINABLE) -> int:
    """Put every BN layer outside ``trainable`` in eval mode (running stats frozen);
    returns how many."""
    model = _unwrap(model)
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _trainable(
                name, trainable):
            m.eval()
            n += 1
    return n


@HOOKS.register_module()
class FreezeForFinetuneHook(Hook):
    """Freeze the detector except the new classification branches (``trainable`` name
    prefixes) before training, and keep the frozen BN layers in eval mode at every
    iteration (the train loop calls ``model.train()`` at each epoch)."""

    priority = 'VERY_HIGH'

    def __init__(self, trainable: Iterable[str] = DEFAULT_TRAINABLE) -> None:
        self.trainable = tuple(trainable)

    def before_train(self, runner) -> None:
        counts = freeze_except(runner.model, self.trainable)
        set_frozen_norms_eval(runner.model, self.trainable)
        logger = getattr(runner, 'logger', None)
        if logger is not None:
            logger.info(f'FreezeForFinetuneHook: {counts}')

    def before_train_epoch(self, runner) -> None:
        set_frozen_norms_eval(runner.model, self.trainable)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        set_frozen_norms_eval(runner.model, self.trainable)

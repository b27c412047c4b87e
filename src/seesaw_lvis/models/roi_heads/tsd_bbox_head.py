r"""TSD box head: "Revisiting the Sibling Head in Object Detector" (Song et al., CVPR 2020).

Re-written for mmdet 3.3 from the description in ``reference/mmdet-3.3-map.md`` (no code of
the authors' mmdet 1.x release is used). One head per cascade stage of
:class:`~seesaw_lvis.models.roi_heads.HTCLiteRoIHead`::

    RoI feature F (7x7, from the extractor, global context added)
      |-- sibling head (mmdet Shared2FC: shared fcs -> fc_cls / fc_reg)   [training only]
      |-- delta_shared_fc -> relu -> delta_c: fc-relu-fc -> (2, 7, 7) per-bin offsets
      |                          \-> delta_r: fc-relu-fc -> 2 (one shift of the whole box)
      re-pool from the FPN level of each RoI (level chosen as the extractor does):
        classification: deformable RoI pooling, offsets delta_c, gamma ``gamma_c`` (0.1)
        regression:     the RoI shifted by gamma_r * (w, h) * delta_r (gamma_r 0.1), pooled
                        by the same deformable op with delta_r as a constant per-bin offset
                        (identical to pooling the shifted box, and it gives delta_r a gradient)
      -> tsd_cls_fcs -> tsd_fc_cls      -> ``cls_score``   (C+1, or the loss' own count)
      -> tsd_reg_fcs -> tsd_fc_reg      -> ``bbox_pred``   (deltas w.r.t. the SHIFTED RoI)

Losses (``loss_and_target_tsd``): the TSD branch's cls/reg losses (keys as mmdet's BBoxHead:
``loss_cls``/``acc`` or Seesaw's ``loss_cls_classes``..., ``loss_bbox``), the sibling's with
a ``sib.`` prefix, and the progressive constraints

    loss_pc_cls = mean_i relu(-(p_tsd[y_i] - p_sib[y_i].detach() - m_i)),
                  m_i = min(1 - p_sib[y_i], pc_cls_margin), over all sampled RoIs
    loss_pc_loc = mean_pos relu(-(IoU_tsd - IoU_sib.detach() - m)),
                  m = min(1 - IoU_sib, pc_loc_margin), over positives (IoU with the gt box)

``p`` are the loss' activated scores (``get_activation`` for Seesaw's C+2 outputs, softmax
otherwise). ``pc_cls=False`` drops ``loss_pc_cls`` (the Seesaw row, section 2.2).

Calling convention (read by HTCLiteRoIHead through ``requires_roi_context``)::

    out = head(roi_feats, feats=x, rois=rois, roi_extractor=extractor, feat_fuse=fn)
    # dict: cls_score, bbox_pred, reg_rois (shifted RoIs, detached: decode against these),
    #       cls_feats (re-pooled classification features), delta_c, delta_r,
    #       and in training cls_score_sib, bbox_pred_sib

Deformable RoI pooling comes from ``seesaw_lvis.models.ops.deform_roi_pool.deform_roi_pool``
(mmcv's signature; plain-PyTorch on CPU, mmcv's kernel on CUDA), imported on first use.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch import Tensor

from mmdet.models.roi_heads.bbox_heads.convfc_bbox_head import ConvFCBBoxHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor


def _get_deform_roi_pool() -> Callable:
    """The deformable RoI pooling function (lazy import; tests may monkeypatch this)."""
    from seesaw_lvis.models.ops.deform_roi_pool import deform_roi_pool
    return deform_roi_pool


def activate_scores(loss_cls: nn.Module, cls_score: Tensor) -> Tensor:
    """Class probabilities incl. background (last column) as mmdet's BBoxHead computes them
    at inference: the loss' ``get_activation`` when it has a custom one (Seesaw), else
    softmax."""
    if getattr(loss_cls, 'custom_activation', False) or getattr(
            loss_cls, 'custom_cls_channels', False):
        return loss_cls.get_activation(cls_score)
    return F.softmax(cls_score, dim=-1)


def shift_rois(rois: Tensor, delta_r: Tensor, gamma: float) -> Tensor:
    """Shift each RoI (batch_idx, x1, y1, x2, y2) by gamma * (w, h) * delta_r (size kept)."""
    w = rois[:, 3] - rois[:, 1]
    h = rois[:, 4] - rois[:, 2]
    dx = gamma * w * delta_r[:, 0]
    dy = gamma * h * delta_r[:, 1]
    shift = torch.stack([torch.zeros_like(dx), dx, dy, dx, dy], dim=1)
    return rois + shift


@MODELS.register_module()
class TSDBBoxHead(ConvFCBBoxHead):
    """Task-aware spatial disentanglement box head (see module docstring).

    Args:
        num_shared_fcs (int): fcs of the sibling head (Shared2FC: 2).
        fc_out_channels (int): width of every fc tower (sibling and TSD).
        num_tsd_cls_fcs / num_tsd_reg_fcs (int): fcs of the TSD towers after re-pooling.
        delta_fc_channels (int): width of the shared fc and the hidden fc of delta_c/delta_r.
        gamma_c (float): deformable pooling gamma for the classification offsets.
        gamma_r (float): shift scale of the regression RoI (fraction of w/h per unit).
        pool_sampling_ratio (int, optional): sampling ratio of the re-pooling; None takes
            the extractor's RoI layer's ``sampling_ratio``.
        pc_cls / pc_loc (bool): whether to add the classification / localisation
            progressive constraint losses.
        pc_cls_margin / pc_loc_margin (float): their margins (0.3 in TSD's configs).
        pc_cls_weight / pc_loc_weight (float): their loss weights.
        Other arguments: as mmdet's ConvFCBBoxHead/BBoxHead (``loss_cls``, ``bbox_coder``,
        ``reg_class_agnostic``, ``cls_predictor_cfg``...). ``loss_cls.custom_cls_channels``
        (Seesaw: C+2 outputs) is honoured by both the sibling and the TSD predictors.
    """

    requires_roi_context = True

    def __init__(self,
                 num_shared_fcs: int = 2,
                 fc_out_channels: int = 1024,
                 num_tsd_cls_fcs: int = 2,
                 num_tsd_reg_fcs: int = 2,
                 delta_fc_channels: int = 256,
                 gamma_c: float = 0.1,
                 gamma_r: float = 0.1,
                 pool_sampling_ratio: Optional[int] = None,
                 pc_cls: bool = True,
                 pc_loc: bool = True,
                 pc_cls_margin: float = 0.3,
                 pc_loc_margin: float = 0.3,
                 pc_cls_weight: float = 1.0,
                 pc_loc_weight: float = 1.0,
                 init_cfg=None,
                 **kwargs) -> None:
        super().__init__(
            num_shared_convs=0,
            num_shared_fcs=num_shared_fcs,
            num_cls_convs=0,
            num_cls_fcs=0,
            num_reg_convs=0,
            num_reg_fcs=0,
            fc_out_channels=fc_out_channels,
            init_cfg=init_cfg,
            **kwargs)
        assert not self.with_avg_pool, 'TSD works on flattened RoI features'
        assert self.with_cls and self.with_reg
        self.gamma_c = gamma_c
        self.gamma_r = gamma_r
        self.pool_sampling_ratio = pool_sampling_ratio
        self.pc_cls = pc_cls
        self.pc_loc = pc_loc
        self.pc_cls_margin = pc_cls_margin
        self.pc_loc_margin = pc_loc_margin
        self.pc_cls_weight = pc_cls_weight
        self.pc_loc_weight = pc_loc_weight

        flat = self.in_channels * self.roi_feat_area
        self.delta_shared_fc = nn.Linear(flat, delta_fc_channels)
        self.delta_c = nn.Sequential(
            nn.Linear(delta_fc_channels, delta_fc_channels), nn.ReLU(inplace=True),
            nn.Linear(delta_fc_channels, 2 * self.roi_feat_area))
        self.delta_r = nn.Sequential(
            nn.Linear(delta_fc_channels, delta_fc_channels), nn.ReLU(inplace=True),
            nn.Linear(delta_fc_channels, 2))

        def tower(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.Linear(flat if i == 0 else fc_out_channels, fc_out_channels)
                for i in range(n))

        self.tsd_cls_fcs = tower(num_tsd_cls_fcs)
        self.tsd_reg_fcs = tower(num_tsd_reg_fcs)
        cls_in = fc_out_channels if num_tsd_cls_fcs > 0 else flat
        reg_in = fc_out_channels if num_tsd_reg_fcs > 0 else flat
        cls_cfg = self.cls_predictor_cfg.copy()
        cls_cfg.update(in_features=cls_in, out_features=self.fc_cls.out_features)
        self.tsd_fc_cls = MODELS.build(cls_cfg)
        reg_cfg = self.reg_predictor_cfg.copy()
        reg_cfg.update(in_features=reg_in, out_features=self.fc_reg.out_features)
        self.tsd_fc_reg = MODELS.build(reg_cfg)

        if init_cfg is None:
            self.init_cfg += [
                dict(type='Xavier', distribution='uniform',
                     override=[dict(name='tsd_cls_fcs'), dict(name='tsd_reg_fcs'),
                               dict(name='delta_shared_fc')]),
                dict(type='Normal', std=0.01, override=dict(name='tsd_fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='tsd_fc_reg')),
            ]

    def init_weights(self) -> None:
        super().init_weights()
        # zero offsets at start: the TSD branch first pools exactly what the sibling sees
        for seq in (self.delta_c, self.delta_r):
            nn.init.zeros_(seq[-1].weight)
            nn.init.zeros_(seq[-1].bias)

    # ------------------------------------------------------------------ forward
    def _repool(self, feats, rois: Tensor, offsets: Tensor, roi_extractor) -> Tensor:
        """Deformable RoI pooling of ``rois`` from the FPN level of each RoI (gamma folded
        into ``offsets``)."""
        layer0 = roi_extractor.roi_layers[0]
        out_size = tuple(layer0.output_size)
        sr = self.pool_sampling_ratio
        if sr is None:
            sr = int(getattr(layer0, 'sampling_ratio', 0))
        num_levels = len(feats)
        pool = _get_deform_roi_pool()
        out = feats[0].new_zeros(rois.size(0), feats[0].size(1), *out_size)
        if rois.size(0) == 0:
            return out
        if num_levels == 1:
            lvls = rois.new_zeros(rois.size(0), dtype=torch.long)
        else:
            lvls = roi_extractor.map_roi_levels(rois, num_levels)
        for i in range(num_levels):
            inds = (lvls == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                out[inds] = pool(feats[i], rois[inds], offsets[inds], out_size,
                                 1.0 / roi_extractor.featmap_strides[i], sr, 1.0)
        return out

    def forward(self,
                x: Tensor,
                feats=None,
                rois: Optional[Tensor] = None,
                roi_extractor=None,
                feat_fuse: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
                with_sibling: Optional[bool] = None) -> Dict[str, Tensor]:
        """See the module docstring. ``with_sibling`` defaults to ``self.training``."""
        assert feats is not None and rois is not None and roi_extractor is not None, (
            'TSDBBoxHead needs the multi-level features, the RoIs and the RoI extractor '
            '(use it inside HTCLiteRoIHead)')
        if with_sibling is None:
            with_sibling = self.training
        out: Dict[str, Tensor] = {}
        if with_sibling:
            cls_sib, reg_sib = super().forward(x)
            out.update(cls_score_sib=cls_sib, bbox_pred_sib=reg_sib)

        n = x.size(0)
        oh, ow = self.roi_feat_size
        d = self.relu(self.delta_shared_fc(x.flatten(1)))
        delta_c = self.delta_c(d).view(n, 2, oh, ow)  # channel 0: x, 1: y (mmcv layout)
        delta_r = self.delta_r(d)
        offset_r = delta_r[:, :, None, None].expand(n, 2, oh, ow)
        # one pooling call for both branches; gammas folded into the offsets (gamma=1)
        both_rois = torch.cat([rois, rois], 0)
        both_off = torch.cat([delta_c * self.gamma_c, offset_r * self.gamma_r], 0)
        pooled = self._repool(feats, both_rois, both_off.contiguous(), roi_extractor)
        if feat_fuse is not None:
            pooled = feat_fuse(pooled, both_rois)
        cls_feats, reg_feats = pooled[:n], pooled[n:]

        xc = cls_feats.flatten(1)
        for fc in self.tsd_cls_fcs:
            xc = self.relu(fc(xc))
        xr = reg_feats.flatten(1)
        for fc in self.tsd_reg_fcs:
            xr = self.relu(fc(xr))
        out.update(
            cls_score=self.tsd_fc_cls(xc),
            bbox_pred=self.tsd_fc_reg(xr),
            reg_rois=shift_rois(rois, delta_r, self.gamma_r).detach(),
            cls_feats=cls_feats,
            delta_c=delta_c,
            delta_r=delta_r)
        return out

    # ------------------------------------------------------------------ losses
    def _select_deltas(self, bbox_pred: Tensor, labels: Tensor) -> Tensor:
        if self.reg_class_agnostic:
            return bbox_pred.view(bbox_pred.size(0), -1)
        return bbox_pred.view(bbox_pred.size(0), self.num_classes, -1)[
            torch.arange(labels.numel(), device=labels.device), labels]

    def loss_and_target_tsd(self, bbox_out: Dict[str, Tensor], rois: Tensor,
                            sampling_results: List, rcnn_train_cfg: ConfigDict,
                            reduction_override: Optional[str] = None) -> dict:
        """All TSD losses of one stage. Returns ``dict(loss_bbox=..., bbox_targets=...)``
        (targets as the sibling's, for the cascade's refinement)."""
        labels, label_weights, bbox_targets, bbox_weights = self.get_targets(
            sampling_results, rcnn_train_cfg, concat=True)
        reg_rois = bbox_out['reg_rois']
        cls_tsd, reg_tsd = bbox_out['cls_score'], bbox_out['bbox_pred']
        cls_sib, reg_sib = bbox_out['cls_score_sib'], bbox_out['bbox_pred_sib']
        losses = {}

        # sibling head (ordinary targets w.r.t. the original RoIs)
        sib = self.loss(cls_sib, reg_sib, rois, labels, label_weights, bbox_targets,
                        bbox_weights, reduction_override=reduction_override)
        losses.update({f'sib.{k}': v for k, v in sib.items()})

        # TSD branch: regression targets w.r.t. the shifted RoIs
        pos = (labels >= 0) & (labels < self.num_classes)
        pos_gt = (torch.cat([get_box_tensor(res.pos_gt_bboxes) for res in sampling_results])
                  if pos.any() else None)
        tsd_targets = bbox_targets
        if not self.reg_decoded_bbox and pos.any():
            tsd_targets = bbox_targets.clone()
            tsd_targets[pos] = self.bbox_coder.encode(reg_rois[pos, 1:], pos_gt)
        losses.update(self.loss(cls_tsd, reg_tsd, reg_rois, labels, label_weights,
                                tsd_targets, bbox_weights,
                                reduction_override=reduction_override))

        # progressive constraints
        if self.pc_cls:
            valid = (label_weights > 0).float()
            p_t = activate_scores(self.loss_cls, cls_tsd)
            p_s = activate_scores(self.loss_cls, cls_sib).detach()
            idx = labels[:, None]
            pt, ps = p_t.gather(1, idx)[:, 0], p_s.gather(1, idx)[:, 0]
            margin = torch.clamp(1 - ps, max=self.pc_cls_margin)
            pc = F.relu(-(pt - ps - margin))
            losses['loss_pc_cls'] = self.pc_cls_weight * (pc * valid).sum() / valid.sum(
            ).clamp(min=1.0)
        if self.pc_loc:
            if pos.any():
                pl = labels[pos]
                box_t = get_box_tensor(self.bbox_coder.decode(
                    reg_rois[pos, 1:], self._select_deltas(reg_tsd[pos], pl)))
                box_s = get_box_tensor(self.bbox_coder.decode(
                    rois[pos, 1:], self._select_deltas(reg_sib[pos], pl)))
                iou_t = bbox_overlaps(box_t, pos_gt, is_aligned=True)
                iou_s = bbox_overlaps(box_s, pos_gt, is_aligned=True).detach()
                margin = torch.clamp(1 - iou_s, max=self.pc_loc_margin)
                losses['loss_pc_loc'] = self.pc_loc_weight * F.relu(
                    -(iou_t - iou_s - margin)).mean()
            else:
                losses['loss_pc_loc'] = reg_tsd.sum() * 0
        return dict(loss_bbox=losses,
                    bbox_targets=(labels, label_weights, bbox_targets, bbox_weights))

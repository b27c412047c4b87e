"""HTC-Lite RoI head (report, section 1.2) for mmdet 3.3.

A 3-stage box cascade (Cascade R-CNN / HTC style, ``num_stages`` configurable) with

* a global context encoder (mmdet's ``GlobalContextHead``: convs on the top FPN level,
  global average pool, fc, multi-label BCE "semantic encoding" loss ``loss_glbctx`` over
  the image's categories) whose pooled vector is added to every RoI feature of the box
  heads (TSD's re-pooled features included) and of the mask head;
* a single mask head fed by the last stage (no interleaving, no mask information flow);
* optional ``mask_iou_head`` (mmdet's MaskIoUHead, Mask Scoring R-CNN) trained on the last
  stage's positive RoIs; at inference ``mask_scores = scores * IoU_pred[label]``
  (``mask_scores`` is what mmdet's LVIS/COCO metrics use for segm; ``rescore_bbox=True``
  also rescales ``scores``, mmdet's MaskScoringRoIHead behaviour);
* box heads: any mmdet BBoxHead (e.g. ``Shared2FCBBoxHead``), or heads that need the
  multi-level features (``requires_roi_context = True``: :class:`TSDBBoxHead`), which are
  called as ``head(roi_feats, feats=x, rois=rois, roi_extractor=ext, feat_fuse=fn)`` and
  return a dict; their ``reg_rois`` (TSD's shifted RoIs) are what the deltas are decoded
  against, in training refinement and at inference;
* optional dual-branch finetuning (``finetune_cls_branch=True``, see ``dual_branch.py``).

Inference follows mmdet's CascadeRoIHead: the raw class logits of all stages are averaged,
then activated by the last head's loss (``get_activation`` for Seesaw's C+2 outputs, else
softmax); boxes come from the last stage's regression of the second-last stage's boxes.
Losses are keyed ``s{stage}.<name>`` (weighted by ``stage_loss_weights``), ``loss_glbctx``,
``loss_mask`` (x ``mask_loss_weight``), ``loss_mask_iou``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.model import ModuleList
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.layers import multiclass_nms
from mmdet.models.losses import accuracy
from mmdet.models.roi_heads.cascade_roi_head import CascadeRoIHead
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi, get_box_tensor, scale_boxes
from mmdet.utils import ConfigType, InstanceList, OptConfigType

from .dual_branch import ClsBranch, average_scores
from .tsd_bbox_head import activate_scores


@MODELS.register_module()
class HTCLiteRoIHead(CascadeRoIHead):
    """HTC-Lite (see module docstring).

    Args:
        num_stages, stage_loss_weights, bbox_roi_extractor, bbox_head, train_cfg,
            test_cfg: as mmdet's CascadeRoIHead (per-stage lists or one shared config).
        mask_roi_extractor (dict, optional): ONE extractor for the single mask head
            (None: share the last stage's box extractor).
        mask_head (dict, optional): ONE mask head (e.g. FCNMaskHead), fed by the last stage.
        glbctx_head (dict, optional): mmdet ``GlobalContextHead``; its
            ``conv_out_channels`` must equal the RoI feature channels.
        mask_iou_head (dict, optional): mmdet ``MaskIoUHead``.
        mask_loss_weight (float): weight of the single mask loss (1.0, as Mask R-CNN).
        rescore_bbox (bool): with a mask IoU head, also multiply ``scores`` (box score)
            by the predicted mask IoU. Default False: only ``mask_scores``.
        mask_thr_binary (float): threshold for the mask IoU target when the last stage's
            train cfg has no ``mask_thr_binary`` (0.5, as ms_rcnn's configs).
        finetune_cls_branch (bool): add a new classification branch per stage, train only
            it (losses ``s{i}.ft.*``; everything else runs without gradients and the
            original losses are not computed) and average the two branches' activated
            scores at inference. Freezing of the whole detector: ``FreezeForFinetuneHook``.
        ft_branch_init (str): ``'copy'`` (from the original branch at the first training
            step after loading the checkpoint) or ``'fresh'``.
    """

    def __init__(self,
                 num_stages: int,
                 stage_loss_weights,
                 glbctx_head: OptConfigType = None,
                 mask_iou_head: OptConfigType = None,
                 mask_loss_weight: float = 1.0,
                 rescore_bbox: bool = False,
                 mask_thr_binary: float = 0.5,
                 finetune_cls_branch: bool = False,
                 ft_branch_init: str = 'copy',
                 **kwargs) -> None:
        super().__init__(num_stages=num_stages, stage_loss_weights=stage_loss_weights,
                         **kwargs)
        assert self.with_bbox, 'HTCLiteRoIHead needs box heads'
        if glbctx_head is not None:
            self.glbctx_head = MODELS.build(glbctx_head)
        if mask_iou_head is not None:
            assert self.with_mask, 'mask_iou_head needs a mask head'
            self.mask_iou_head = MODELS.build(mask_iou_head)
        self.mask_loss_weight = mask_loss_weight
        self.rescore_bbox = rescore_bbox
        self.mask_thr_binary = mask_thr_binary
        self.finetune_cls_branch = finetune_cls_branch
        assert ft_branch_init in ('copy', 'fresh'), ft_branch_init
        self.ft_branch_init = ft_branch_init
        if finetune_cls_branch:
            self.ft_cls_branches = ModuleList(ClsBranch(h) for h in self.bbox_head)
            # persistent: 0 in the Seesaw row's checkpoint (absent -> init value), 1 after
            self.register_buffer(
                'ft_initialized', torch.tensor(int(ft_branch_init == 'fresh')))

    # ------------------------------------------------------------------ building
    def init_mask_head(self, mask_roi_extractor: ConfigType,
                       mask_head: ConfigType) -> None:
        """One mask head (and extractor) for the last stage."""
        assert not isinstance(mask_head, list), 'HTC-Lite has a single mask head'
        self.mask_head = MODELS.build(mask_head)
        if mask_roi_extractor is not None:
            assert not isinstance(mask_roi_extractor, list)
            self.share_roi_extractor = False
            self.mask_roi_extractor = MODELS.build(mask_roi_extractor)
        else:
            self.share_roi_extractor = True
            self.mask_roi_extractor = self.bbox_roi_extractor[-1]

    @property
    def with_glbctx(self) -> bool:
        return getattr(self, 'glbctx_head', None) is not None

    @property
    def with_mask_iou(self) -> bool:
        return getattr(self, 'mask_iou_head', None) is not None

    @property
    def with_semantic(self) -> bool:  # read by mmdet's HybridTaskCascade detector
        return False

    # ------------------------------------------------------------------ forwards
    @staticmethod
    def _fuse_glbctx(roi_feats: Tensor, rois: Tensor, glbctx_feat: Tensor) -> Tensor:
        """Add each image's global context vector (B, C, 1, 1) to its RoIs' features."""
        return roi_feats + glbctx_feat[rois[:, 0].long()].to(roi_feats.dtype)

    def _bbox_forward(self, stage: int, x: Tuple[Tensor], rois: Tensor,
                      glbctx_feat: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """One stage's box head. Returns at least ``cls_score``, ``bbox_pred``,
        ``bbox_feats`` and ``reg_rois`` (the RoIs the deltas refer to)."""
        extractor = self.bbox_roi_extractor[stage]
        head = self.bbox_head[stage]
        feats = x[:extractor.num_inputs]
        bbox_feats = extractor(feats, rois)
        fuse = None
        if glbctx_feat is not None:
            def fuse(f, r):
                return self._fuse_glbctx(f, r, glbctx_feat)
            bbox_feats = fuse(bbox_feats, rois)
        if getattr(head, 'requires_roi_context', False):
            # the sibling branch only feeds the original losses: skip it when finetuning
            out = dict(head(bbox_feats, feats=feats, rois=rois, roi_extractor=extractor,
                            feat_fuse=fuse,
                            with_sibling=False if self.finetune_cls_branch else None))
        else:
            cls_score, bbox_pred = head(bbox_feats)
            out = dict(cls_score=cls_score, bbox_pred=bbox_pred)
        out.setdefault('reg_rois', rois)
        out['bbox_feats'] = bbox_feats
        return out

    def _mask_forward(self, x: Tuple[Tensor], rois: Tensor,
                      glbctx_feat: Optional[Tensor] = None) -> Dict[str, Tensor]:
        mask_feats = self.mask_roi_extractor(x[:self.mask_roi_extractor.num_inputs], rois)
        if glbctx_feat is not None:
            mask_feats = self._fuse_glbctx(mask_feats, rois, glbctx_feat)
        return dict(mask_preds=self.mask_head(mask_feats), mask_feats=mask_feats)

    def _glbctx(self, x: Tuple[Tensor]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        if not self.with_glbctx:
            return None, None
        return self.glbctx_head(x)

    # ------------------------------------------------------------------ training
    def _maybe_init_ft_branches(self) -> None:
        if self.finetune_cls_branch and int(self.ft_initialized) == 0:
            for branch, head in zip(self.ft_cls_branches, self.bbox_head):
                branch.copy_from(head)
            self.ft_initialized.fill_(1)

    def _ft_loss(self, stage: int, bbox_out: Dict[str, Tensor], targets: tuple) -> dict:
        branch = self.ft_cls_branches[stage]
        labels, label_weights = targets[0], targets[1]
        cls_score = branch(bbox_out)
        losses = {}
        if cls_score.numel() == 0:
            losses['loss_cls'] = cls_score.sum()
            return losses
        avg_factor = max(torch.sum(label_weights > 0).float().item(), 1.)
        loss = branch.loss_cls(cls_score, labels, label_weights, avg_factor=avg_factor)
        if isinstance(loss, dict):
            losses.update(loss)
        else:
            losses['loss_cls'] = loss
        if getattr(branch.loss_cls, 'custom_accuracy', False):
            losses.update(branch.loss_cls.get_accuracy(cls_score, labels))
        else:
            losses['acc'] = accuracy(cls_score, labels)
        return losses

    def bbox_loss(self, stage: int, x: Tuple[Tensor], sampling_results: List,
                  glbctx_feat: Optional[Tensor] = None) -> dict:
        """Forward + losses of one stage; returns the forward dict plus ``rois``,
        ``loss_bbox`` and ``bbox_targets``."""
        head = self.bbox_head[stage]
        rois = bbox2roi([res.priors for res in sampling_results])
        if self.finetune_cls_branch:
            with torch.no_grad():
                out = self._bbox_forward(stage, x, rois, glbctx_feat)
                targets = head.get_targets(sampling_results, self.train_cfg[stage])
            out.update(rois=rois, bbox_targets=targets,
                       loss_bbox={f'ft.{k}': v
                                  for k, v in self._ft_loss(stage, out, targets).items()})
            return out
        out = self._bbox_forward(stage, x, rois, glbctx_feat)
        out['rois'] = rois
        if getattr(head, 'requires_roi_context', False):
            out.update(head.loss_and_target_tsd(out, rois, sampling_results,
                                                self.train_cfg[stage]))
        else:
            out.update(head.loss_and_target(
                cls_score=out['cls_score'], bbox_pred=out['bbox_pred'], rois=rois,
                sampling_results=sampling_results, rcnn_train_cfg=self.train_cfg[stage]))
        return out

    def mask_loss(self, x: Tuple[Tensor], sampling_results: List,
                  batch_gt_instances: InstanceList,
                  glbctx_feat: Optional[Tensor] = None) -> dict:
        pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
        mask_out = self._mask_forward(x, pos_rois, glbctx_feat)
        cfg = self.train_cfg[-1]
        lt = self.mask_head.loss_and_target(
            mask_preds=mask_out['mask_preds'], sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances, rcnn_train_cfg=cfg)
        losses = dict(loss_mask=lt['loss_mask']['loss_mask'] * self.mask_loss_weight)
        if self.with_mask_iou:
            if 'mask_thr_binary' not in cfg:
                cfg = ConfigDict(dict(cfg, mask_thr_binary=self.mask_thr_binary))
            pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
            mask_preds = mask_out['mask_preds']
            idx = torch.arange(pos_labels.numel(), device=pos_labels.device)
            pos_mask_pred = mask_preds[idx, pos_labels]
            iou_pred = self.mask_iou_head(mask_out['mask_feats'], pos_mask_pred)
            losses.update(self.mask_iou_head.loss_and_target(
                iou_pred[idx, pos_labels], pos_mask_pred, lt['mask_targets'],
                sampling_results, batch_gt_instances, cfg))
        return losses

    def loss(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
             batch_data_samples: SampleList) -> dict:
        assert len(rpn_results_list) == len(batch_data_samples)
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = \
            unpack_gt_instances(batch_data_samples)
        ft = self.finetune_cls_branch
        if ft:
            self._maybe_init_ft_branches()
        losses = dict()

        glbctx_feat = None
        if self.with_glbctx:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not ft):
                mc_pred, glbctx_feat = self.glbctx_head(x)
            if not ft:
                losses['loss_glbctx'] = self.glbctx_head.loss(
                    mc_pred, [gt.labels for gt in batch_gt_instances])

        results_list = rpn_results_list
        sampling_results = []
        for stage in range(self.num_stages):
            self.current_stage = stage
            w = self.stage_loss_weights[stage]
            sampling_results = []
            for i in range(len(batch_data_samples)):
                results = results_list[i]
                results.priors = results.pop('bboxes')
                assign_result = self.bbox_assigner[stage].assign(
                    results, batch_gt_instances[i], batch_gt_instances_ignore[i])
                sampling_results.append(self.bbox_sampler[stage].sample(
                    assign_result, results, batch_gt_instances[i],
                    feats=[lvl[i][None] for lvl in x]))

            out = self.bbox_loss(stage, x, sampling_results, glbctx_feat)
            for name, value in out['loss_bbox'].items():
                losses[f's{stage}.{name}'] = value * w if 'loss' in name else value

            if stage < self.num_stages - 1:
                with torch.no_grad():
                    results_list = self.bbox_head[stage].refine_bboxes(
                        sampling_results,
                        dict(cls_score=out['cls_score'], bbox_pred=out['bbox_pred'],
                             rois=out['reg_rois'], bbox_targets=out['bbox_targets']),
                        batch_img_metas)
                if results_list is None:  # no proposals at all
                    break

        if self.with_mask and not ft:
            losses.update(self.mask_loss(x, sampling_results, batch_gt_instances,
                                         glbctx_feat))
        return losses

    # ------------------------------------------------------------------ inference
    def _activate(self, stage_head, logits: Tensor) -> Tensor:
        return activate_scores(stage_head.loss_cls, logits)

    def _cascade(self, x: Tuple[Tensor], rois: Tensor, batch_img_metas: List[dict],
                 num_proposals_per_img, glbctx_feat: Optional[Tensor] = None) -> dict:
        """Run all stages. Returns per-image lists: ``reg_rois`` (the last stage's
        decoding RoIs), ``bbox_preds`` (last stage), ``scores`` (activated, averaged over
        stages as mmdet's cascade does; with a finetuned branch the mean of the two
        branches' scores), and ``scores_orig`` / ``scores_ft``, ``cls_logits``."""
        ms_logits, ms_ft_logits = [], []
        num = list(num_proposals_per_img)
        for stage in range(self.num_stages):
            head = self.bbox_head[stage]
            out = self._bbox_forward(stage, x, rois, glbctx_feat)
            ms_logits.append(out['cls_score'])
            if self.finetune_cls_branch:
                ms_ft_logits.append(self.ft_cls_branches[stage](out))
            reg_rois, bbox_pred = out['reg_rois'], out['bbox_pred']
            if stage < self.num_stages - 1:
                scores = self._activate(head, out['cls_score'])
                labels = scores[:, :-1].argmax(dim=1)
                new_rois = []
                for i, (r, lb, bp) in enumerate(zip(reg_rois.split(num), labels.split(num),
                                                    bbox_pred.split(num))):
                    if r.shape[0] == 0:
                        continue
                    boxes = get_box_tensor(
                        head.regress_by_class(r[:, 1:], lb, bp, batch_img_metas[i]))
                    new_rois.append(torch.cat([r[:, [0]], boxes], dim=1))
                rois = torch.cat(new_rois) if new_rois else rois
        last = self.bbox_head[-1]
        logits = sum(ms_logits) / float(len(ms_logits))
        scores_orig = self._activate(last, logits)
        res = dict(reg_rois=reg_rois.split(num), bbox_preds=bbox_pred.split(num),
                   cls_logits=logits.split(num), scores_orig=scores_orig.split(num))
        if self.finetune_cls_branch:
            ft_logits = sum(ms_ft_logits) / float(len(ms_ft_logits))
            scores_ft = activate_scores(self.ft_cls_branches[-1].loss_cls, ft_logits)
            res['scores_ft'] = scores_ft.split(num)
            res['scores'] = average_scores(scores_orig, scores_ft).split(num)
        else:
            res['scores'] = res['scores_orig']
        return res

    def _bbox_post_process(self, roi: Tensor, scores: Tensor, bbox_pred: Tensor,
                           img_meta: dict, rescale: bool,
                           rcnn_test_cfg: Optional[ConfigDict]) -> InstanceData:
        """mmdet's BBoxHead._predict_by_feat_single, with the scores already activated."""
        head = self.bbox_head[-1]
        results = InstanceData()
        if roi.shape[0] == 0:
            return empty_instances([img_meta], roi.device, task_type='bbox',
                                   instance_results=[results],
                                   box_type=head.predict_box_type, use_box_type=False,
                                   num_classes=head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)[0]
        img_shape = img_meta['img_shape']
        num_rois = roi.size(0)
        num_classes = 1 if head.reg_class_agnostic else head.num_classes
        roi = roi.repeat_interleave(num_classes, dim=0)
        bbox_pred = bbox_pred.reshape(-1, head.bbox_coder.encode_size)
        bboxes = head.bbox_coder.decode(roi[..., 1:], bbox_pred, max_shape=img_shape)
        if rescale and bboxes.size(0) > 0:
            scale_factor = [1 / s for s in img_meta['scale_factor']]
            bboxes = scale_boxes(bboxes, scale_factor)
        bboxes = get_box_tensor(bboxes)
        box_dim = bboxes.size(-1)
        bboxes = bboxes.view(num_rois, -1)
        if rcnn_test_cfg is None:
            results.bboxes = bboxes
            results.scores = scores
            return results
        det_bboxes, det_labels = multiclass_nms(
            bboxes, scores, rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
            rcnn_test_cfg.max_per_img, box_dim=box_dim)
        results.bboxes = det_bboxes[:, :-1]
        results.scores = det_bboxes[:, -1]
        results.labels = det_labels
        return results

    def predict_bbox(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     rpn_results_list: InstanceList, rcnn_test_cfg: ConfigType,
                     rescale: bool = False, glbctx_feat: Optional[Tensor] = None,
                     **kwargs) -> InstanceList:
        proposals = [res.bboxes for res in rpn_results_list]
        num_proposals_per_img = tuple(len(p) for p in proposals)
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(
                batch_img_metas, rois.device, task_type='bbox',
                box_type=self.bbox_head[-1].predict_box_type,
                num_classes=self.bbox_head[-1].num_classes,
                score_per_cls=rcnn_test_cfg is None)
        res = self._cascade(x, rois, batch_img_metas, num_proposals_per_img, glbctx_feat)
        return [
            self._bbox_post_process(res['reg_rois'][i], res['scores'][i],
                                    res['bbox_preds'][i], batch_img_metas[i], rescale,
                                    rcnn_test_cfg)
            for i in range(len(batch_img_metas))
        ]

    def predict_mask(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     results_list: InstanceList, rescale: bool = False,
                     glbctx_feat: Optional[Tensor] = None) -> InstanceList:
        bboxes = [res.bboxes for res in results_list]
        mask_rois = bbox2roi(bboxes)
        if mask_rois.shape[0] == 0:
            results_list = empty_instances(
                batch_img_metas, mask_rois.device, task_type='mask',
                instance_results=results_list,
                mask_thr_binary=self.test_cfg.mask_thr_binary)
            if self.with_mask_iou:
                for res in results_list:
                    res.mask_scores = res.scores.clone()
            return results_list
        mask_out = self._mask_forward(x, mask_rois, glbctx_feat)
        num = [len(res) for res in results_list]
        mask_preds = mask_out['mask_preds']
        iou_preds = None
        if self.with_mask_iou:
            labels = torch.cat([res.labels for res in results_list])
            idx = torch.arange(labels.numel(), device=labels.device)
            iou_preds = self.mask_iou_head(mask_out['mask_feats'],
                                           mask_preds[idx, labels])[idx, labels].split(num)
        results_list = self.mask_head.predict_by_feat(
            mask_preds=mask_preds.split(num, 0), results_list=results_list,
            batch_img_metas=batch_img_metas, rcnn_test_cfg=self.test_cfg, rescale=rescale)
        if iou_preds is not None:
            for res, iou in zip(results_list, iou_preds):
                res.mask_scores = res.scores * iou
                if self.rescore_bbox:
                    res.scores = res.mask_scores
        return results_list

    def predict(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
                batch_data_samples: SampleList, rescale: bool = False) -> InstanceList:
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        _, glbctx_feat = self._glbctx(x)
        bbox_rescale = rescale if not self.with_mask else False
        results_list = self.predict_bbox(x, batch_img_metas, rpn_results_list,
                                         self.test_cfg, rescale=bbox_rescale,
                                         glbctx_feat=glbctx_feat)
        if self.with_mask:
            results_list = self.predict_mask(x, batch_img_metas, results_list,
                                             rescale=rescale, glbctx_feat=glbctx_feat)
        return results_list

    def forward(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
                batch_data_samples: SampleList = None) -> tuple:
        """Tensor mode (complexity analysis): averaged scores and last-stage deltas per
        image, then the mask logits on the refined RoIs."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        _, glbctx_feat = self._glbctx(x)
        proposals = [r.bboxes for r in rpn_results_list]
        num = tuple(len(p) for p in proposals)
        res = self._cascade(x, bbox2roi(proposals), batch_img_metas, num, glbctx_feat)
        results = (res['scores'], res['bbox_preds'])
        if self.with_mask:
            rois = torch.cat(res['reg_rois'])
            mask_preds = self._mask_forward(x, rois, glbctx_feat)['mask_preds']
            results = results + (mask_preds.split(num, 0), )
        return results

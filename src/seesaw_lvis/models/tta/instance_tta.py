"""``InstanceSegTTAModel``: the entry's multi-scale + flip test, HTC's augmented test, for HTC-Lite.

The paper's last row tests "multi-scale ... with horizontal flipping" at 1200-2000 px. The entry
was built on mmdetection 2.x, whose HTC (``HybridTaskCascadeRoIHead.aug_test``) merged views
*inside* the detector; mmdet 3.3's ``DetTTAModel`` instead merges finished detections (and
refuses masks). This model runs the 2.x procedure on a detector with an ``HTCLiteRoIHead``:

1. Proposals. Each view's RPN proposals are mapped back to the original image (flip undone,
   scale divided out), concatenated and reduced by NMS with the
   RPN's own test ``nms`` to its ``max_per_img`` (mmdet 2.x ``merge_aug_proposals``).
2. Boxes and scores. In every view the SAME merged proposals (mapped into the view) run
   through the whole cascade: class scores averaged over stages (and over the original and
   finetuned branches of the RFS row), boxes decoded by the last stage. The boxes, mapped
   back, and the scores are averaged over the views, then one multi-class NMS with the
   detector's ``test_cfg.rcnn`` (score threshold, NMS, detections per image) gives the
   detections (2.x ``merge_aug_bboxes`` + ``multiclass_nms``).
3. Masks. In every view the mask head runs on the merged detections (mapped into the view);
   each view's 28 x 28 mask probabilities of the detected class are un-flipped and averaged
   (2.x ``merge_aug_masks``), then pasted once at the original size and thresholded at
   ``mask_thr_binary``. With a MaskIoU head (the mask-scoring row) its IoU prediction is
   averaged over the views the same way and ``mask_scores = score x IoU``: the segm ranking
   of mask scoring survives TTA (mmdet's LVIS metric ranks masks by ``mask_scores``).

Views come from mmcv's ``TestTimeAug`` (the row's ``tta_pipeline``), as with mmdet's
``--tta``: ``data['inputs'][view][image]``. Everything is in the original image's frame at
the end, as a detector's ``predict(rescale=True)``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from mmcv.ops import nms
from mmdet.models.layers import multiclass_nms
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi, bbox_flip
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor

__all__ = ["InstanceSegTTAModel", "TTA_SCALES"]

TTA_SCALES = (1200, 1400, 1600, 1800, 2000)  # the paper's test scales (longer edge)


def _scale(boxes: Tensor, meta: dict) -> Tensor:
    """mmdet 3's ``scale_factor`` (w, h) repeated over the box columns (x1, y1, x2, y2, ...);
    mmdet's ``bbox_mapping`` helpers still expect 2.x's four factors."""
    return boxes.new_tensor(meta['scale_factor']).repeat(boxes.shape[-1] // 2)


def _to_view(boxes: Tensor, meta: dict) -> Tensor:
    """Original-image boxes (..., 4k) into a view: scaled, then flipped."""
    boxes = boxes * _scale(boxes, meta)
    if meta.get('flip', False):
        boxes = bbox_flip(boxes, meta['img_shape'], meta.get('flip_direction') or 'horizontal')
    return boxes


def _from_view(boxes: Tensor, meta: dict) -> Tensor:
    """A view's boxes back in the original image (flip undone, scale divided out)."""
    if meta.get('flip', False):
        boxes = bbox_flip(boxes, meta['img_shape'], meta.get('flip_direction') or 'horizontal')
    return boxes / _scale(boxes, meta)


def _unflip_mask_probs(probs: Tensor, meta: dict) -> Tensor:
    """RoI mask probabilities [K, h, w] of a flipped view, in the original orientation."""
    if not meta.get('flip', False):
        return probs
    direction = meta.get('flip_direction') or 'horizontal'
    dims = {'horizontal': (-1, ), 'vertical': (-2, ), 'diagonal': (-2, -1)}.get(direction)
    if dims is None:
        raise ValueError(f"Invalid flipping direction '{direction}'")
    return probs.flip(dims)


@MODELS.register_module()
class InstanceSegTTAModel(BaseTTAModel):
    """HTC's augmented test for detectors with an ``HTCLiteRoIHead`` (see the module docstring).

    Merging uses the detector's own ``test_cfg`` (``rpn`` for proposals, ``rcnn`` for the
    detections: score threshold, NMS, detections per image, mask threshold), as mmdet 2.x's
    ``aug_test`` did: nothing of it is configured twice.
    """

    def __init__(self, module, data_preprocessor=None):
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        roi_head = getattr(self.module, 'roi_head', None)
        for need in ('_cascade', '_bbox_post_process', '_mask_forward', '_glbctx'):
            if not hasattr(roi_head, need):
                raise TypeError(f"InstanceSegTTAModel runs HTC's augmented test: it needs a detector "
                                f"with an HTCLiteRoIHead (got {type(roi_head).__name__}, no {need})")

    def merge_preds(self, data_samples_list):  # pragma: no cover - test_step merges itself
        raise NotImplementedError('InstanceSegTTAModel merges inside test_step (HTC aug_test)')

    # ------------------------------------------------------------------ the views
    def _views(self, data: dict) -> List[dict]:
        """Per view: preprocessed inputs, data samples, features, global context, proposals."""
        det = self.module
        num_views = len(data['inputs'])
        views = []
        for v in range(num_views):
            batch = det.data_preprocessor({'inputs': data['inputs'][v],
                                           'data_samples': data['data_samples'][v]}, False)
            x = det.extract_feat(batch['inputs'])
            samples = batch['data_samples']
            _, glbctx = det.roi_head._glbctx(x)
            proposals = det.rpn_head.predict(x, samples, rescale=False)
            views.append(dict(x=x, metas=[s.metainfo for s in samples], samples=samples,
                              glbctx=glbctx, proposals=proposals))
        return views

    def _merged_proposals(self, views: List[dict], i: int) -> Tensor:
        rpn_cfg = self.module.test_cfg.rpn
        boxes = torch.cat([_from_view(v['proposals'][i].bboxes, v['metas'][i]) for v in views])
        scores = torch.cat([v['proposals'][i].scores for v in views])
        if boxes.numel() == 0:
            return boxes.reshape(0, 4)
        kept, _ = nms(boxes.contiguous(), scores.contiguous(), rpn_cfg.nms.iou_threshold)
        order = kept[:, 4].argsort(descending=True)[:rpn_cfg.max_per_img]
        return kept[order, :4]

    @staticmethod
    def _glbctx_of(view: dict, i: int):
        return None if view['glbctx'] is None else view['glbctx'][i:i + 1]

    def _view_feats(self, view: dict, i: int):
        return tuple(f[i:i + 1] for f in view['x'])

    # ------------------------------------------------------------------ merging
    def _merged_detections(self, views: List[dict], i: int, proposals: Tensor) -> InstanceData:
        roi_head = self.module.roi_head
        aug_boxes, aug_scores = [], []
        for view in views:
            meta = view['metas'][i]
            rois = bbox2roi([_to_view(proposals, meta)])
            res = roi_head._cascade(self._view_feats(view, i), rois, [meta], (len(proposals), ),
                                    self._glbctx_of(view, i))
            dense = roi_head._bbox_post_process(res['reg_rois'][0], res['scores'][0],
                                                res['bbox_preds'][0], meta, rescale=False,
                                                rcnn_test_cfg=None)
            aug_boxes.append(_from_view(dense.bboxes, meta))
            aug_scores.append(dense.scores)
        boxes = torch.stack(aug_boxes).mean(dim=0)
        scores = torch.stack(aug_scores).mean(dim=0)
        cfg = roi_head.test_cfg
        det_bboxes, det_labels = multiclass_nms(boxes, scores, cfg.score_thr, cfg.nms, cfg.max_per_img,
                                                box_dim=4)
        return InstanceData(bboxes=det_bboxes[:, :4], scores=det_bboxes[:, 4], labels=det_labels)

    def _merged_masks(self, views: List[dict], i: int, dets: InstanceData) -> Dict[str, Tensor]:
        """Mask probabilities [K, h, w] and mask IoU [K] (None without a MaskIoU head), each
        averaged over the views."""
        roi_head = self.module.roi_head
        idx = torch.arange(len(dets), device=dets.bboxes.device)
        probs, ious = 0, 0
        for view in views:
            meta = view['metas'][i]
            rois = bbox2roi([_to_view(dets.bboxes, meta)])
            out = roi_head._mask_forward(self._view_feats(view, i), rois, self._glbctx_of(view, i))
            logits = out['mask_preds'][idx, dets.labels]  # the detected class (class-specific head)
            probs = probs + _unflip_mask_probs(logits.sigmoid(), meta)
            if roi_head.with_mask_iou:
                ious = ious + roi_head.mask_iou_head(out['mask_feats'], logits)[idx, dets.labels]
        n = len(views)
        return {'probs': probs / n, 'iou': ious / n if roi_head.with_mask_iou else None}

    def _paste(self, probs: Tensor, dets: InstanceData, ori_shape) -> Tensor:
        """The averaged probabilities pasted at the original size (FCNMaskHead's paste and
        threshold, already activated: ``activate_map``)."""
        roi_head = self.module.roi_head
        meta = {'ori_shape': ori_shape, 'scale_factor': (1.0, 1.0)}
        zeros = torch.zeros_like(dets.labels)  # probs hold the detected class's map only
        return roi_head.mask_head._predict_by_feat_single(
            mask_preds=probs[:, None], bboxes=dets.bboxes.clone(), labels=zeros, img_meta=meta,
            rcnn_test_cfg=roi_head.test_cfg, rescale=False, activate_map=True)

    def test_step(self, data) -> List[DetDataSample]:
        views = self._views(data)
        roi_head = self.module.roi_head
        outputs = []
        for i in range(len(views[0]['metas'])):
            ori_shape = views[0]['metas'][i]['ori_shape'][:2]
            proposals = self._merged_proposals(views, i)
            dets = self._merged_detections(views, i, proposals)
            if roi_head.with_mask:
                if len(dets):
                    merged = self._merged_masks(views, i, dets)
                    dets.masks = self._paste(merged['probs'], dets, ori_shape)
                    if merged['iou'] is not None:
                        dets.mask_scores = dets.scores * merged['iou']
                else:
                    dets.masks = torch.zeros(0, *ori_shape, dtype=torch.bool, device=dets.bboxes.device)
                    if roi_head.with_mask_iou:
                        dets.mask_scores = dets.scores.clone()
            sample = views[0]['samples'][i]
            result = DetDataSample(metainfo={k: v for k, v in sample.metainfo.items()
                                             if k not in ('flip', 'flip_direction')})
            for key in ('gt_instances', 'ignored_instances'):
                if key in sample:
                    result.set_field(sample.get(key), key)
            result.pred_instances = dets
            outputs.append(result)
        return outputs

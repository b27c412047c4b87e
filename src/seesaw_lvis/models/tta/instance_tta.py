"""``InstanceSegTTAModel``: multi-scale + flip test-time augmentation for boxes *and* masks.

mmdet 3.3's ``DetTTAModel`` merges boxes only and asserts "TTA of instance segmentation does
not support now". This subclass keeps its box merging (flip undone with ``bbox_flip`` on
``ori_shape``, concatenation over augmentations, ``batched_nms`` with ``tta_cfg.nms`` --
per-class NMS for ``type='nms'`` -- then ``tta_cfg.max_per_img``) and adds masks.

What the wrapped detector hands us. mmengine's ``BaseTTAModel.test_step`` runs the detector's
own ``test_step`` once per augmentation; mmdet detectors predict with ``rescale=True``, so each
augmentation's boxes *and* masks are already in the original image's frame and size
(``FCNMaskHead`` pastes masks into ``ori_shape``) -- only the flip remains to be undone.
(Defensively, a mask of another size is resized to ``ori_shape`` bilinearly.)

How masks are merged (``tta_cfg.mask_merge``):

* ``'average'`` (default): for each detection kept by NMS, the soft masks of all detections
  of the *same class* whose box overlaps the kept box by ``IoU >= tta_cfg.mask_match_iou``
  (default: the NMS IoU threshold), from every augmentation, flip undone, are averaged (plain
  mean, as mmdet's ``merge_aug_masks``), then thresholded at ``tta_cfg.mask_thr_binary``. NMS
  picks one box but the suppressed near-duplicates are views of the same object at other
  scales/flips; averaging their masks is the mask analogue of multi-scale testing and is what
  mmdet 2.x's HTC/Mask R-CNN ``aug_test`` did (there by re-running the mask head on the merged
  boxes in every augmentation, which mmengine's TTA design -- predictions first, merge after --
  does not allow; matching by IoU is the closest equivalent). With binary masks the mean is a
  vote.
* ``'own'``: the kept detection's own mask (flip undone), nothing else.

Soft masks: with ``tta_cfg.soft_masks=True`` (default) the model sets the wrapped detector's
``roi_head.test_cfg.mask_thr_binary = -1`` at construction, which makes ``FCNMaskHead`` return
``uint8`` probabilities (``p * 255``) instead of booleans; the threshold is applied here after
averaging. ``tta_cfg.mask_thr_binary`` defaults to the detector's own value (0.5). The
quantisation to 1/255 moves the threshold by at most 1/255 (a pixel with p in [0.498, 0.5)
may flip) -- negligible against the gain of averaging probabilities rather than votes.

Scales. The paper: "images scales are 1200, 1400, 1600, 1800 and 2000 pixels". Training
resized by the *longer* edge (768-1792), so we read the test scales as the longer edge too:
mmdet's ``Resize(scale=(s, s), keep_ratio=True)`` scales the image so that it fits in an
``s x s`` square, i.e. longer edge = s (see :func:`example_tta_cfg`). mmdet's own TTA configs
(``configs/*/*_tta.py``) follow the same mechanism with rectangular (long, short) pairs.
"""
from __future__ import annotations

import copy
import warnings
from typing import List

import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_flip, bbox_overlaps
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

__all__ = ["InstanceSegTTAModel", "example_tta_cfg", "TTA_SCALES"]

TTA_SCALES = (1200, 1400, 1600, 1800, 2000)


def _unflip_masks(masks: Tensor, flip: bool, direction: str | None) -> Tensor:
    if not flip:
        return masks
    if direction == 'horizontal':
        return masks.flip(-1)
    if direction == 'vertical':
        return masks.flip(-2)
    if direction == 'diagonal':
        return masks.flip(-1).flip(-2)
    raise ValueError(f"Invalid flipping direction '{direction}'")


def _to_prob(masks: Tensor) -> Tensor:
    """bool -> {0, 1}; uint8 (FCNMaskHead with threshold < 0) -> p = v / 255; float as is."""
    if masks.dtype == torch.bool:
        return masks.float()
    if masks.dtype == torch.uint8:
        return masks.float() / 255.0
    return masks.float()


@MODELS.register_module()
class InstanceSegTTAModel(DetTTAModel):
    """``DetTTAModel`` that also merges instance masks (see the module docstring).

    ``tta_cfg`` keys: ``nms`` (as DetTTAModel, e.g. ``dict(type='nms', iou_threshold=0.5)``),
    ``max_per_img`` (300 for LVIS), ``mask_merge`` ('average' | 'own'), ``mask_match_iou``,
    ``mask_thr_binary``, ``soft_masks`` (bool).
    """

    def __init__(self, tta_cfg=None, **kwargs):
        tta_cfg = ConfigDict(copy.deepcopy(dict(tta_cfg or {})))
        tta_cfg.setdefault('nms', ConfigDict(type='nms', iou_threshold=0.5))
        tta_cfg.setdefault('max_per_img', 300)
        super().__init__(tta_cfg=tta_cfg, **kwargs)
        self.mask_merge = tta_cfg.get('mask_merge', 'average')
        if self.mask_merge not in ('average', 'own'):
            raise ValueError(f"mask_merge must be 'average' or 'own', got {self.mask_merge!r}")
        self.mask_match_iou = float(
            tta_cfg.get('mask_match_iou', tta_cfg.nms.get('iou_threshold', 0.5)))
        detector_thr = self._detector_mask_thr()
        thr = tta_cfg.get('mask_thr_binary', None)
        if thr is None:
            thr = detector_thr if detector_thr is not None and detector_thr >= 0 else 0.5
        self.mask_thr_binary = float(thr)
        if tta_cfg.get('soft_masks', True):
            self._request_soft_masks()

    # ------------------------------------------------------------------ detector test_cfg
    def _roi_test_cfg(self):
        roi_head = getattr(self.module, 'roi_head', None)
        cfg = getattr(roi_head, 'test_cfg', None)
        return cfg if cfg is not None and 'mask_thr_binary' in cfg else None

    def _detector_mask_thr(self):
        cfg = self._roi_test_cfg()
        return None if cfg is None else float(cfg['mask_thr_binary'])

    def _request_soft_masks(self) -> None:
        cfg = self._roi_test_cfg()
        if cfg is None:
            warnings.warn('InstanceSegTTAModel: the wrapped model has no '
                          'roi_head.test_cfg.mask_thr_binary; merging its masks as given '
                          '(binary masks are averaged as votes).')
            return
        cfg['mask_thr_binary'] = -1.0  # FCNMaskHead then returns uint8 probabilities

    # ------------------------------------------------------------------ merging
    def _merge_single_sample(self, data_samples: List[DetDataSample]) -> DetDataSample:
        if data_samples[0].pred_instances.get('masks', None) is None:
            return super()._merge_single_sample(data_samples)

        aug_bboxes, aug_scores, aug_labels, aug_masks, img_metas = [], [], [], [], []
        aug_index, local_index = [], []
        for a, sample in enumerate(data_samples):
            inst = sample.pred_instances
            aug_bboxes.append(inst.bboxes)
            aug_scores.append(inst.scores)
            aug_labels.append(inst.labels)
            aug_masks.append(inst.masks)
            img_metas.append(sample.metainfo)
            n = len(inst.bboxes)
            aug_index.append(torch.full((n, ), a, dtype=torch.long))
            local_index.append(torch.arange(n))
        bboxes, scores = self.merge_aug_bboxes(aug_bboxes, aug_scores, img_metas)
        labels = torch.cat(aug_labels, dim=0)
        aug_index = torch.cat(aug_index)
        local_index = torch.cat(local_index)

        ori_h, ori_w = (int(v) for v in img_metas[0]['ori_shape'][:2])
        result = data_samples[0]
        if bboxes.numel() == 0:
            empty = InstanceData()
            empty.bboxes = bboxes.reshape(0, 4)
            empty.scores = scores.reshape(0)
            empty.labels = labels.reshape(0)
            empty.masks = torch.zeros(0, ori_h, ori_w, dtype=torch.bool, device=bboxes.device)
            result.pred_instances = empty
            return result

        det_bboxes, keep = batched_nms(bboxes, scores, labels, self.tta_cfg.nms)
        max_per_img = self.tta_cfg.max_per_img
        det_bboxes, keep = det_bboxes[:max_per_img], keep[:max_per_img]
        det_labels = labels[keep]

        def soft_mask(i: int) -> Tensor:
            a, j = int(aug_index[i]), int(local_index[i])
            meta = img_metas[a]
            m = _to_prob(aug_masks[a][j])
            m = _unflip_masks(m, bool(meta.get('flip', False)), meta.get('flip_direction'))
            if tuple(m.shape[-2:]) != (ori_h, ori_w):
                m = F.interpolate(m[None, None], size=(ori_h, ori_w), mode='bilinear',
                                  align_corners=False)[0, 0]
            return m

        if self.mask_merge == 'average':
            ious = bbox_overlaps(bboxes[keep], bboxes)  # (K, N), all merged boxes
            same = det_labels[:, None] == labels[None, :]
            matched = (ious >= self.mask_match_iou) & same
            matched[torch.arange(len(keep)), keep] = True  # always itself
        masks = torch.zeros(len(keep), ori_h, ori_w, dtype=torch.bool, device=bboxes.device)
        for k, i in enumerate(keep.tolist()):
            if self.mask_merge == 'own':
                prob = soft_mask(i)
            else:
                members = matched[k].nonzero(as_tuple=False).flatten().tolist()
                prob = soft_mask(members[0])
                for i2 in members[1:]:
                    prob = prob + soft_mask(i2)
                prob = prob / len(members)
            masks[k] = prob >= self.mask_thr_binary

        results = InstanceData()
        results.bboxes = det_bboxes[:, :-1].clone()
        results.scores = det_bboxes[:, -1].clone()
        results.labels = det_labels
        results.masks = masks
        result.pred_instances = results
        return result


def example_tta_cfg(scales=TTA_SCALES, max_per_img: int = 300,
                    nms_iou: float = 0.5, backend_args=None) -> tuple[dict, list]:
    """``(tta_model, tta_pipeline)`` for the paper's TTA: 5 scales (longer edge) x flip.

    Use as in mmdet's ``tools/test.py --tta``: ``cfg.tta_model.module = cfg.model;
    cfg.model = cfg.tta_model`` and the test dataset's ``pipeline = tta_pipeline``.
    """
    tta_model = dict(
        type='InstanceSegTTAModel',
        tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=nms_iou),  # per-class (batched) NMS
            max_per_img=max_per_img,
            mask_merge='average',
            mask_match_iou=nms_iou,
            mask_thr_binary=0.5,
            soft_masks=True))
    tta_pipeline = [
        dict(type='LoadImageFromFile', backend_args=backend_args),
        dict(
            type='TestTimeAug',
            transforms=[
                # (s, s) + keep_ratio: the image fits an s x s square -> longer edge = s
                [dict(type='Resize', scale=(s, s), keep_ratio=True) for s in scales],
                [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
                [dict(type='PackDetInputs',
                      meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                 'scale_factor', 'flip', 'flip_direction'))],
            ]),
    ]
    return tta_model, tta_pipeline

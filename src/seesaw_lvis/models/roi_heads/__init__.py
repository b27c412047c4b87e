"""Cascade RoI-head modules mmdetection 3.3 lacks, registered in mmdet's registries:

* ``HTCLiteRoIHead`` (MODELS): HTC-Lite with global context, one mask head, optional
  mask IoU head and dual-branch finetuning;
* ``TSDBBoxHead`` (MODELS): TSD box head (Song et al., CVPR 2020) for every cascade stage;
* ``FreezeForFinetuneHook`` (HOOKS): freezes everything but the finetuned branches.
"""
from .dual_branch import (ClsBranch, FreezeForFinetuneHook, average_scores, freeze_except,
                          set_frozen_norms_eval)
from .htc_lite_roi_head import HTCLiteRoIHead
from .tsd_bbox_head import TSDBBoxHead, activate_scores, shift_rois

__all__ = ['HTCLiteRoIHead', 'TSDBBoxHead', 'ClsBranch', 'FreezeForFinetuneHook',
           'average_scores', 'freeze_except', 'set_frozen_norms_eval', 'activate_scores',
           'shift_rois']

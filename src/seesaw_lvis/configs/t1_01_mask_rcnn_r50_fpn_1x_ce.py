# Table 1, row 1: Mask R-CNN R50-FPN, multi-scale training, random sampler, 1x, softmax CE.
# The common base of every row: mmdet's Mask R-CNN with the LVIS v1 head sizes and test
# settings (score threshold 1e-4 and up to 300 detections per image, LVIS's limit).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '_base_/lvis_v1_random_ms.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['seesaw_lvis.models'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=1203),
        mask_head=dict(num_classes=1203)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))
# LR 0.02 for batch 16 (mmdet's schedules); scaled linearly when the batch differs.
auto_scale_lr = dict(enable=True, base_batch_size=16)

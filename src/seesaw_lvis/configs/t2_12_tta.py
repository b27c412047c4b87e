# Table 2, row 12: + test-time augmentation (paper sec. 2.2): the finetuned model tested at
# five scales, 1200/1400/1600/1800/2000 pixels on the longer edge (as the training resize),
# each with and without horizontal flip; boxes merged by NMS (300 per image), masks of
# matched detections averaged across augmentations (seesaw_lvis.models.tta; mmdet's
# DetTTAModel refuses masks).
_base_ = './t2_11_rfs_finetune.py'

tta_model = dict(
    type='InstanceSegTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=300, mask_merge='average',
                 mask_match_iou=0.5, mask_thr_binary=0.5, soft_masks=True))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(s, s), keep_ratio=True) for s in (1200, 1400, 1600, 1800, 2000)],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                               'scale_factor', 'flip', 'flip_direction'))]])]

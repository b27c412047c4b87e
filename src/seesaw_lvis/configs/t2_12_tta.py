# Table 2, row 12: + test-time augmentation (paper sec. 2.2): the finetuned model tested at
# five scales, 1200/1400/1600/1800/2000 pixels on the longer edge (as the training resize),
# each with and without horizontal flip, merged as the entry's mmdetection 2.x HTC did
# (aug_test): proposals of all views merged by NMS, then in every view the cascade on the same
# proposals, boxes and scores averaged over the views and one NMS with the model's own test
# settings (300 per image), then the mask head on the merged boxes in every view, its
# probabilities and mask-IoU predictions averaged (seesaw_lvis.models.tta; mmdet 3.3's
# DetTTAModel merges finished boxes only and refuses masks).
_base_ = './t2_11_rfs_finetune.py'

tta_model = dict(type='InstanceSegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(s, s), keep_ratio=True) for s in (1200, 1400, 1600, 1800, 2000)],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                               'scale_factor', 'flip', 'flip_direction'))]])]

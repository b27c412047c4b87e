# Table 2, row 7: + training-time augmentation and the 45-epoch schedule (paper sec. 2.2):
# InstaBoost (Fang et al., ICCV 2019; mmdet's configs/instaboost settings, before
# LoadAnnotations as mmdet requires), a random resize of the longer edge in 768-1792 (square
# scales with keep_ratio, step 32: mmdet's way to draw the long edge), then a random
# 1280x1280 crop; 45 epochs, LR x0.1 at epochs 30 and 40.
_base_ = './t2_06_mask_scoring.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='InstaBoost', action_candidate=('normal', 'horizontal', 'skip'),
         action_prob=(1, 0, 0), scale=(0.8, 1.2), dx=15, dy=15, theta=(-1, 1),
         color_prob=0.5, hflag=False, aug_ratio=0.5),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(s, s) for s in range(768, 1792 + 1, 32)],
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=(1280, 1280),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=45)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=45, by_epoch=True, milestones=[30, 40], gamma=0.1),
]

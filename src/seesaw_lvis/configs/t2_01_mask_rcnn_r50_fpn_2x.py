# Table 2, row 1: the baseline, Mask R-CNN R50-FPN with multi-scale training and a random
# sampler, 2x schedule (24 epochs, LR x0.1 at 16 and 22): Table 1's CE model, 2x.
_base_ = './t1_01_mask_rcnn_r50_fpn_1x_ce.py'

train_cfg = dict(max_epochs=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
]

# Table 2, row 9: + a better backbone, ResNeSt-200 (Zhang et al. 2020) with DCNv2 in stages
# 2-4 (mmdet's configs/resnest settings: radix 2, reduction 4, avg_down_stride, 128-channel
# stem; ImageNet weights open-mmlab://resnest200), SyncBN as in row 2.
_base_ = './t2_08_fpg_neck.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNeSt',
        depth=200,
        stem_channels=128,
        radix=2,
        reduction_factor=4,
        avg_down_stride=True,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True),
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnest200')))

# Table 2, row 8: + a better neck, the enhanced FPG (Chen et al. 2020): mmdet's FPG
# (configs/fpg: 9 stacked bottom-up paths, 256 channels) with DCNv2 after feature upsampling
# and CARAFE(++) content-aware downsampling (seesaw_lvis.models.necks.FPGCarafe). FPG halves
# every level exactly, so inputs are padded to a multiple of 64 (mmdet's FPG configs).
_base_ = './t2_07_train_aug_45e.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
fpg_trans = dict(norm_cfg=norm_cfg, inplace=False, order=('act', 'conv', 'norm'))
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    neck=dict(
        _delete_=True,
        type='FPGCarafe',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        inter_channels=256,
        num_outs=5,
        stack_times=9,
        paths=['bu'] * 9,
        same_down_trans=None,
        same_up_trans=dict(type='carafe_down', scale_factor=2, down_kernel=5, down_group=1,
                           encoder_kernel=3, encoder_dilation=1, compressed_channels=64,
                           kernel_size=3, **fpg_trans),
        across_lateral_trans=dict(type='conv', kernel_size=1, **fpg_trans),
        across_down_trans=dict(type='interpolation_conv', mode='nearest', kernel_size=3,
                               conv_cfg=dict(type='DCNv2', deform_groups=1), **fpg_trans),
        across_up_trans=None,
        across_skip_trans=dict(type='conv', kernel_size=1, **fpg_trans),
        output_trans=dict(type='last_conv', kernel_size=3, order=('act', 'conv', 'norm'), inplace=False),
        norm_cfg=norm_cfg,
        skip_inds=[(0, 1, 2, 3), (0, 1, 2), (0, 1), (0,), ()]))

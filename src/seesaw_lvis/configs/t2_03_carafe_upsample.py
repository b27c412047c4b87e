# Table 2, row 3: + CARAFE upsampling in the mask head (Wang et al., ICCV 2019), with
# mmdet's configs/carafe settings. On CPU, seesaw_lvis.models.ops runs CARAFE in PyTorch
# (mmcv 2.1 has no CPU kernel); on GPU mmcv's kernel runs.
_base_ = './t2_02_syncbn.py'

model = dict(
    roi_head=dict(
        mask_head=dict(
            upsample_cfg=dict(
                type='carafe',
                scale_factor=2,
                up_kernel=5,
                up_group=1,
                encoder_kernel=3,
                encoder_dilation=1,
                compressed_channels=64))))

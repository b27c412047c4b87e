# Table 2, row 6: + Mask scoring (Huang et al., CVPR 2019): a MaskIoU head on the last
# cascade stage; the mask score becomes the box score x the predicted mask IoU.
# mmdet only has it for the single-stage head; ours lives in HTCLiteRoIHead.
_base_ = './t2_05_tsd.py'

model = dict(
    roi_head=dict(
        mask_iou_head=dict(type='MaskIoUHead', num_convs=4, num_fcs=2, roi_feat_size=14,
                           in_channels=256, conv_out_channels=256, fc_out_channels=1024,
                           num_classes=1203)))

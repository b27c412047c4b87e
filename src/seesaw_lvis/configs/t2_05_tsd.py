# Table 2, row 5: + TSD (Song et al., CVPR 2020) as the box head of all three HTC-Lite stages:
# separate classification (deformable re-pooling with learned per-bin offsets) and regression
# (re-pooling of a shifted RoI) branches, the sibling head kept in training, progressive
# constraints with margins 0.3 (TSD's configs). Module: seesaw_lvis.models.roi_heads.
_base_ = './t2_04_htc_lite.py'


def tsd_head(stds):
    return dict(
        type='TSDBBoxHead', in_channels=256, fc_out_channels=1024, delta_fc_channels=256,
        roi_feat_size=7, num_classes=1203, num_shared_fcs=2, num_tsd_cls_fcs=2, num_tsd_reg_fcs=2,
        gamma_c=0.1, gamma_r=0.1, pc_cls=True, pc_loc=True, pc_cls_margin=0.3, pc_loc_margin=0.3,
        pc_cls_weight=1.0, pc_loc_weight=1.0,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


model = dict(
    roi_head=dict(bbox_head=[tsd_head([0.1, 0.1, 0.2, 0.2]), tsd_head([0.05, 0.05, 0.1, 0.1]),
                             tsd_head([0.033, 0.033, 0.067, 0.067])]))

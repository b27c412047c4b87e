# Table 2, row 10: + Seesaw Loss in the classification branches of the TSD heads of all
# three stages (p = 0.8, q = 2.0, normalized linear classifier tau = 20, objectness branch),
# and TSD's classification progressive-constraint loss removed (paper sec. 2.2).
_base_ = './t2_09_resnest200_dcn.py'


def seesaw_tsd_head(stds):
    return dict(
        type='TSDBBoxHead', in_channels=256, fc_out_channels=1024, delta_fc_channels=256,
        roi_feat_size=7, num_classes=1203, num_shared_fcs=2, num_tsd_cls_fcs=2, num_tsd_reg_fcs=2,
        gamma_c=0.1, gamma_r=0.1, pc_cls=False, pc_loc=True, pc_cls_margin=0.3, pc_loc_margin=0.3,
        pc_cls_weight=1.0, pc_loc_weight=1.0,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
        loss_cls=dict(type='DistSeesawLoss', p=0.8, q=2.0, num_classes=1203, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


model = dict(
    roi_head=dict(bbox_head=[seesaw_tsd_head([0.1, 0.1, 0.2, 0.2]),
                             seesaw_tsd_head([0.05, 0.05, 0.1, 0.1]),
                             seesaw_tsd_head([0.033, 0.033, 0.067, 0.067])]))

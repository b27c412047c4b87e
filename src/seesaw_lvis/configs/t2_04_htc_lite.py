# Table 2, row 4: + HTC-Lite (paper sec. 1.2): a 3-stage HTC-style cascade whose semantic
# branch is replaced by a global context encoder (convs + global average pooling on the top
# FPN level, multi-label semantic-encoding loss; its vector is added to the box and mask RoI
# features), with a single mask head at the last stage. Module: seesaw_lvis.models.roi_heads.
# The RoI head is replaced whole, so rows 2-3 are restated inside it: SyncBN in the heads
# (Shared4Conv1FC box heads, mask convs, context convs) and CARAFE upsampling in the mask head.
# Cascade conventions (mmdet's cascade-mask-rcnn): class-agnostic regression, per-stage
# target stds, SmoothL1, stage weights 1/0.5/0.25, IoU 0.5/0.6/0.7, 2000 RPN proposals.
_base_ = './t2_03_carafe_upsample.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
carafe = dict(type='carafe', scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
              encoder_dilation=1, compressed_channels=64)


def box_head(stds):
    return dict(
        type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg, in_channels=256, fc_out_channels=1024,
        roi_feat_size=7, num_classes=1203,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


def rcnn_stage(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        mask_size=28, pos_weight=-1, debug=False)


model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='HTCLiteRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        glbctx_head=dict(type='GlobalContextHead', num_convs=4, in_channels=256,
                         conv_out_channels=256, num_classes=1203, loss_weight=3.0,
                         conv_to_res=True, norm_cfg=norm_cfg),
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256, featmap_strides=[4, 8, 16, 32]),
        bbox_head=[box_head([0.1, 0.1, 0.2, 0.2]), box_head([0.05, 0.05, 0.1, 0.1]),
                   box_head([0.033, 0.033, 0.067, 0.067])],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256, conv_out_channels=256,
                       num_classes=1203, norm_cfg=norm_cfg, upsample_cfg=carafe,
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)),
        mask_loss_weight=1.0),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=2000, max_per_img=2000),
        rcnn=[rcnn_stage(0.5), rcnn_stage(0.6), rcnn_stage(0.7)]),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, nms=dict(type='nms', iou_threshold=0.5),
                            max_per_img=300, mask_thr_binary=0.5)))

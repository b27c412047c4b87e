# Table 2, row 2: + SyncBN in the backbone and the heads (paper sec. 2.2). The backbone's BN
# becomes synchronized and trainable (norm_eval off: statistics are learned across GPUs);
# the FPN, the box head's shared convs/fcs and the mask head's convs get SyncBN too.
# mmengine reverts SyncBN to BN in non-distributed (CPU) runs.
# The box head becomes Shared4Conv1FC: this is the same modification, not a second one. The
# baseline's Shared2FC head is two fc layers with no conv to normalise, so "SyncBN in the
# heads" needs a head that has norm layers, and mmdet's convention for a normalised box head
# is exactly this one (configs/gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py: norm in the backbone,
# neck and heads, with the box head switched to Shared4Conv1FCBBoxHead). The paper names no
# other box head for this row; HTC-Lite (row 4) keeps Shared4Conv1FC with SyncBN.
_base_ = './t2_01_mask_rcnn_r50_fpn_2x.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Table 1, row 3: + Seesaw Loss (p = 0.8, q = 2.0, objectness branch) with the normalized
# linear classifier (tau = 20), in place of EQL (paper sec. 1.1, eq. 1-4).
_base_ = './t1_02_eql.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
            loss_cls=dict(
                _delete_=True,
                type='DistSeesawLoss',
                p=0.8,
                q=2.0,
                num_classes=1203,
                loss_weight=1.0))))

# Table 1, row 2: + Equalization Loss (Tan et al., CVPR 2020), sigmoid-based, in place of CE.
_base_ = './t1_01_mask_rcnn_r50_fpn_1x_ce.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            # EQL is a sigmoid loss over 1203 classes: its authors start the classifier bias at
            # the prior 0.001 (focal-loss style), otherwise the initial loss is dominated by
            # the negatives ("roughly 1 / num_classes" in their code: on the synthetic set's
            # classes seesaw_lvis.configs.resolve moves it to the same share, 1203 / C times
            # 0.001). The rest is mmdet's default head initialisation.
            init_cfg=[
                dict(type='Normal', std=0.01, bias_prob=0.001, override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
                dict(type='Xavier', distribution='uniform',
                     override=[dict(name='shared_fcs'), dict(name='cls_fcs'),
                               dict(name='reg_fcs')]),
            ],
            loss_cls=dict(
                _delete_=True,
                type='EQLoss',
                use_sigmoid=True,
                num_classes=1203,
                # lambda for LVIS v1: 1.1e-3, the EQL authors' own v1 setting (source in
                # seesaw_lvis.models.losses.eql; the paper's 1.76e-3 is for LVIS v0.5);
                # class frequencies from the training split's stats.
                lambda_=0.0011,
                freq_file='results/stats/class_freq.json',
                loss_weight=1.0))))

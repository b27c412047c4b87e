# Table 2, row 11: + finetuning with repeat factor sampling (paper sec. 2.2): start from the
# Seesaw row's weights (the pipeline passes them as load_from), freeze the whole model
# including BN statistics, add a new classification branch per cascade stage (initialised as
# a copy of the old one), train only those 1x (12 epochs, LR x0.1 at 8 and 11) on a
# repeat-factor sampled stream (LVIS: t = 0.001; mmengine's ClassBalancedDataset repeats each
# image ceil(r) times), and average the old and new branches' scores at test time.
_base_ = './t2_10_seesaw.py'

model = dict(roi_head=dict(finetune_cls_branch=True, ft_branch_init='copy'))
custom_hooks = [dict(type='FreezeForFinetuneHook')]
find_unused_parameters = True  # frozen parameters get no gradient under DDP
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset=dict(
            type='LVISV1Dataset',
            data_root='data/lvis_v1/',
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline={{_base_.train_pipeline}},
            backend_args=None)))
train_cfg = dict(max_epochs=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

# LVIS v1 with a *random* sampler and multi-scale training: the data setting of the paper's
# Table 1 and of Table 2's baseline ("multi-scale training and random data sampler", sec. 2.2).
# mmdet's lvis_v1_instance.py wraps the dataset in ClassBalancedDataset (RFS); the paper's
# models before the finetuning row do not, so the wrapper is removed here (_delete_).
# data_root/ann files are the LVIS v1 layout; the pipeline rebinds them to the chosen dataset
# (seesaw_lvis.configs.resolve), at `full` scale to data/lvis_v1/ unchanged.
_base_ = 'mmdet::_base_/datasets/lvis_v1_instance.py'

dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2,  # x 8 GPUs = 16, mmdet's LVIS schedules
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))

"""FPGCarafe (enhanced FPG neck) and InstanceSegTTAModel (box + mask TTA)."""
from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

import seesaw_lvis.models.necks  # noqa: F401  (registers FPGCarafe)
import seesaw_lvis.models.tta  # noqa: F401  (registers InstanceSegTTAModel)
from seesaw_lvis.models.necks import CarafeDownConv, FPGCarafe, example_neck_cfg
from seesaw_lvis.models.tta import InstanceSegTTAModel, example_tta_cfg

from tests.conftest import tiny_trunk


@pytest.fixture(autouse=True)
def _quiet_mmengine():
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    yield
    logger.setLevel(level)


# ------------------------------------------------------------------------------ FPGCarafe
def _tiny_neck_cfg():
    cfg = example_neck_cfg(channels=8, in_channels=(4, 8, 8, 8), stack_times=5)
    cfg['same_up_trans']['compressed_channels'] = 4
    return cfg


def test_example_neck_cfg_matches_mmdet_fpg_settings():
    cfg = example_neck_cfg()
    assert cfg['type'] == 'FPGCarafe'
    assert cfg['stack_times'] == 9 and cfg['paths'] == ['bu'] * 9
    assert cfg['inter_channels'] == 256 and cfg['out_channels'] == 256 and cfg['num_outs'] == 5
    assert cfg['skip_inds'] == [(0, 1, 2, 3), (0, 1, 2), (0, 1), (0, ), ()]
    assert cfg['same_up_trans']['type'] == 'carafe_down'
    assert cfg['across_down_trans']['type'] == 'interpolation_conv'
    assert cfg['across_down_trans']['conv_cfg']['type'] == 'DCNv2'


def test_fpg_carafe_builds_runs_and_backprops():
    from mmcv.ops import ModulatedDeformConv2dPack
    from mmdet.registry import MODELS

    neck = MODELS.build(_tiny_neck_cfg())
    assert isinstance(neck, FPGCarafe)
    neck.init_weights()
    # DCNv2 on every upsampling (across_down) transition, CARAFE++ on every downsampling one
    ups = [t['across_down'] for stage in neck.fpn_transitions for t in stage
           if len(t) and t['across_down'] is not None]
    downs = [t['same_up'] for stage in neck.fpn_transitions for t in stage
             if len(t) and t['same_up'] is not None]
    assert ups and all(isinstance(u.conv.conv, ModulatedDeformConv2dPack) for u in ups)
    assert downs and all(isinstance(d, CarafeDownConv) for d in downs)
    # init restored after FPG's Caffe2Xavier: near-uniform kernels, zero DCN offsets
    assert downs[0].content_encoder.weight.std() < 0.01
    assert ups[0].conv.conv.conv_offset.weight.abs().max() == 0

    xs = [torch.randn(2, c, 16 // 2 ** i, 32 // 2 ** i, requires_grad=True)
          for i, c in enumerate((4, 8, 8, 8))]
    outs = neck(xs)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 32), (2, 8, 8, 16), (2, 8, 4, 8),
                                              (2, 8, 2, 4), (2, 8, 1, 2)]
    sum(o.square().mean() for o in outs).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in xs)
    assert downs[-1].content_encoder.weight.grad.abs().sum() > 0
    assert ups[-1].conv.conv.weight.grad.abs().sum() > 0
    assert ups[-1].conv.conv.conv_offset.weight.grad.abs().sum() > 0


def test_carafe_down_transition_shapes_odd_sizes():
    t = CarafeDownConv(6, 4, down_kernel=3, down_group=2, compressed_channels=4)
    y = t(torch.randn(1, 6, 7, 9))
    assert y.shape == (1, 4, 4, 5)  # ceil(7/2) x ceil(9/2), as a stride-2 conv


# ------------------------------------------------------------------------------ TTA (hand-built)
H, W = 10, 20


def _sample(flip: bool, bboxes, scores, labels, masks):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    s = DetDataSample(metainfo=dict(ori_shape=(H, W), img_shape=(H, W), flip=flip,
                                    flip_direction='horizontal' if flip else None,
                                    scale_factor=(1.0, 1.0)))
    inst = InstanceData()
    inst.bboxes = torch.tensor(bboxes, dtype=torch.float32).reshape(-1, 4)
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.labels = torch.tensor(labels, dtype=torch.long)
    inst.masks = masks
    s.pred_instances = inst
    return s


def _rect(x1, y1, x2, y2, value=255):
    m = torch.zeros(H, W, dtype=torch.uint8)
    m[y1:y2, x1:x2] = value
    return m


class _FakeDetector(nn.Module):
    """Returns fixed predictions per augmentation (keyed by the 'flip' meta)."""

    def __init__(self, preds):
        super().__init__()
        self.preds = preds
        self.roi_head = nn.Module()
        self.roi_head.test_cfg = {'mask_thr_binary': 0.5}

    def test_step(self, data):
        return [copy.deepcopy(self.preds[bool(s.metainfo['flip'])])
                for s in data['data_samples']]


def _hand_built():
    # object A (label 1) at x 2..6, y 3..8 in the original image; the flipped view sees it
    # at x 14..18. Its masks: the identity view covers columns 2..5, the flipped view (once
    # unflipped) columns 3..6 -> the average covers 3..5 fully (p = 1) and 2, 6 at p = 0.5.
    ident = _sample(False, [[2, 3, 6, 8]], [0.9], [1],
                    _rect(2, 3, 6, 8)[None])
    flipped_a = _rect(3, 3, 7, 8).flip(-1)
    # object B (label 2) only in the flipped view, at x 1..5 there -> 15..19 unflipped
    flipped_b = _rect(1, 0, 5, 2)
    flipped = _sample(True, [[W - 6, 3, W - 2, 8], [1, 0, 5, 2]], [0.8, 0.7], [1, 2],
                      torch.stack([flipped_a, flipped_b]))
    return ident, flipped


@pytest.mark.parametrize("mode", ["own", "average"])
def test_tta_merges_boxes_and_masks_hand_built(mode):
    ident, flipped = _hand_built()
    det = _FakeDetector({False: ident, True: flipped})
    tta = InstanceSegTTAModel(module=det, tta_cfg=dict(
        nms=dict(type='nms', iou_threshold=0.5), max_per_img=300, mask_merge=mode,
        mask_thr_binary=0.5))
    assert det.roi_head.test_cfg['mask_thr_binary'] == -1  # soft masks requested
    data = {'inputs': [[torch.zeros(3, H, W)], [torch.zeros(3, H, W)]],
            'data_samples': [[ident], [flipped]]}
    out = tta.test_step(data)
    assert len(out) == 1
    pred = out[0].pred_instances
    order = pred.labels.tolist()
    assert order == [1, 2]  # the two label-1 views merged by NMS; B kept
    torch.testing.assert_close(pred.bboxes[0], torch.tensor([2., 3., 6., 8.]))
    torch.testing.assert_close(pred.bboxes[1], torch.tensor([15., 0., 19., 2.]))
    torch.testing.assert_close(pred.scores, torch.tensor([0.9, 0.7]))
    assert pred.masks.dtype == torch.bool and pred.masks.shape == (2, H, W)
    # B's mask comes back unflipped at the original size
    assert torch.equal(pred.masks[1], _rect(15, 0, 19, 2).bool())
    if mode == 'own':
        assert torch.equal(pred.masks[0], _rect(2, 3, 6, 8).bool())
    else:  # mean of the two views: columns 3..5 at 1.0, columns 2 and 6 at 0.5 (>= thr)
        assert torch.equal(pred.masks[0], _rect(2, 3, 7, 8).bool())
        tta.mask_thr_binary = 0.6
        pred = tta.test_step(data)[0].pred_instances
        assert torch.equal(pred.masks[0], _rect(3, 3, 6, 8).bool())


def test_tta_empty_and_boxes_only():
    empty = _sample(False, [], [], [], torch.zeros(0, H, W, dtype=torch.bool))
    empty_f = copy.deepcopy(empty)
    empty_f.set_metainfo(dict(flip=True, flip_direction='horizontal'))
    det = _FakeDetector({False: empty, True: empty_f})
    tta = InstanceSegTTAModel(module=det, tta_cfg=dict(max_per_img=10))
    out = tta.test_step({'inputs': [[torch.zeros(3, H, W)]] * 2,
                         'data_samples': [[empty], [empty_f]]})[0].pred_instances
    assert len(out) == 0 and out.masks.shape == (0, H, W)


# ------------------------------------------------------------------------------ TTA end to end
def _tiny_mask_rcnn_cfg(num_classes=3):
    return dict(
        type='MaskRCNN',
        **tiny_trunk(16),
        rpn_head=dict(
            type='RPNHead', in_channels=16, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=7,
                                                   sampling_ratio=0),
                                    out_channels=16, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                           roi_feat_size=7, num_classes=num_classes,
                           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           reg_class_agnostic=False,
                           loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
                           loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            mask_roi_extractor=dict(type='SingleRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=14,
                                                   sampling_ratio=0),
                                    out_channels=16, featmap_strides=[4, 8, 16, 32]),
            mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=16,
                           conv_out_channels=16, num_classes=num_classes,
                           upsample_cfg=dict(type='carafe', scale_factor=2, up_kernel=5,
                                             up_group=1, encoder_kernel=3,
                                             encoder_dilation=1, compressed_channels=8),
                           loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                          loss_weight=1.0))),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20, mask_thr_binary=0.5)))


def test_tta_end_to_end_tiny_mask_rcnn(tmp_path):
    import mmcv
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    path = tmp_path / 'img.png'
    mmcv.imwrite(img, str(path))

    tta_model_cfg, tta_pipeline = example_tta_cfg(scales=(48, 64), max_per_img=30)
    tta_pipeline[1]['transforms'].pop(2)  # no annotations for this image
    pipeline = Compose(tta_pipeline)
    item = pipeline(dict(img_path=str(path), img_id=0))
    assert len(item['inputs']) == 4  # 2 scales x (flip, no flip)
    assert max(item['data_samples'][0].img_shape) == 48  # longer edge = scale
    data = pseudo_collate([item])

    torch.manual_seed(0)
    tta_model_cfg['module'] = _tiny_mask_rcnn_cfg()
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    tta = MODELS.build(ConfigDict(tta_model_cfg))
    assert isinstance(tta, InstanceSegTTAModel)
    assert tta.module.roi_head.test_cfg.mask_thr_binary == -1  # soft masks from the head
    assert tta.mask_thr_binary == 0.5
    tta.module.init_weights()
    tta.eval()
    with torch.no_grad():
        out = tta.test_step(data)
    pred = out[0].pred_instances
    assert 0 < len(pred) <= 30
    assert pred.masks.dtype == torch.bool and pred.masks.shape[1:] == (40, 56)
    assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= 56).all()
    assert torch.all(pred.scores[:-1] >= pred.scores[1:])

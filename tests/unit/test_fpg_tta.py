"""FPGCarafe (enhanced FPG neck) and InstanceSegTTAModel (HTC's augmented test, boxes and masks)."""
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
from seesaw_lvis.models.tta import InstanceSegTTAModel

from tests.conftest import tiny_trunk
from tests.unit.test_roi_heads import IMG, NUM_CLASSES, build, detector_cfg


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


# ------------------------------------------------------------------------------ TTA (HTC aug_test)
def _image(seed=0, h=IMG, w=IMG):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _sample_meta(h, w, flip=False, scale=1.0):
    from mmdet.structures import DetDataSample

    return DetDataSample(metainfo=dict(img_id=0, ori_shape=(h, w), img_shape=(round(h * scale), round(w * scale)),
                                       scale_factor=(scale, scale), flip=flip,
                                       flip_direction='horizontal' if flip else None))


def _plain_predict(model, img, meta):
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor({'inputs': [img], 'data_samples': [meta]}, False)
        return model(**data, mode='predict')[0].pred_instances


def _tta_predict(model, views):
    """``views``: [(image tensor, meta sample)], one image per view."""
    tta = InstanceSegTTAModel(module=model)
    tta.eval()
    data = {'inputs': [[img] for img, _ in views], 'data_samples': [[m] for _, m in views]}
    with torch.no_grad():
        return tta.test_step(data)[0].pred_instances


def _same(a, b, keys=('bboxes', 'scores', 'labels', 'masks', 'mask_scores'), atol=0.0):
    assert len(a) == len(b) > 0
    for k in keys:
        x, y = a.get(k), b.get(k)
        assert (x is None) == (y is None), k
        if x is None:
            continue
        if x.dtype.is_floating_point:
            torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(x, y), k


@pytest.fixture(scope='module')
def scoring_model():
    """HTC-Lite with TSD-free heads, global context, a MaskIoU head and the finetuned branch."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        return build(detector_cfg('shared2fc', mask_iou=True, finetune=True))


def test_tta_over_identical_views_equals_no_tta(scoring_model):
    img = _image(1)
    plain = _plain_predict(scoring_model, img, _sample_meta(IMG, IMG))
    merged = _tta_predict(scoring_model, [(img, _sample_meta(IMG, IMG))] * 2)
    _same(merged, plain)  # boxes, scores, labels, masks and mask scores, to the bit: (a + a) / 2 = a
    merged = _tta_predict(scoring_model, [(img, _sample_meta(IMG, IMG))] * 3)
    _same(merged, plain, atol=1e-5)  # (a + a + a) / 3: float rounding only


def test_tta_flipped_view_unflips_exactly(scoring_model):
    """One flipped view merged = the detector on the flipped image, mirrored back."""
    img = _image(2)
    flipped = img.flip(-1)
    on_flipped = _plain_predict(scoring_model, flipped, _sample_meta(IMG, IMG))
    mirrored = on_flipped.clone()
    boxes = on_flipped.bboxes.clone()
    mirrored.bboxes = torch.stack([IMG - boxes[:, 2], boxes[:, 1], IMG - boxes[:, 0], boxes[:, 3]], dim=1)
    mirrored.masks = on_flipped.masks.flip(-1)
    merged = _tta_predict(scoring_model, [(flipped, _sample_meta(IMG, IMG, flip=True))])
    # the only arithmetic difference: proposals mirrored twice (W - (W - x)), float rounding
    _same(merged, mirrored, keys=('bboxes', 'scores', 'mask_scores'), atol=1e-4)
    assert torch.equal(merged.labels, mirrored.labels)
    assert (merged.masks != mirrored.masks).float().mean() < 1e-3


def test_tta_scaled_views_map_back_to_the_original_image(scoring_model):
    """A 1.5x view: the same detections as the detector's own rescale=True prediction."""
    import torch.nn.functional as F

    img = _image(3)
    big = F.interpolate(img[None].float(), scale_factor=1.5, mode='bilinear',
                        align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    meta = _sample_meta(IMG, IMG, scale=1.5)
    plain = _plain_predict(scoring_model, big, meta)
    merged = _tta_predict(scoring_model, [(big, meta)])
    assert plain.masks.shape[1:] == merged.masks.shape[1:] == (IMG, IMG)
    _same(merged, plain, keys=('bboxes', 'scores', 'labels', 'mask_scores'), atol=1e-4)
    assert (merged.masks != plain.masks).float().mean() < 1e-3


def test_tta_mask_scores_rank_segm_by_averaged_mask_iou(scoring_model):
    """Mask scoring survives TTA: mask_scores = box score x the MaskIoU head's prediction
    averaged over the views (here a known IoU per class), so the segm ranking differs from
    the box ranking exactly as the mask IoU says."""
    model = copy.deepcopy(scoring_model)
    iou_of_class = torch.linspace(0.1, 0.9, NUM_CLASSES)
    with torch.no_grad():
        model.roi_head.mask_iou_head.fc_mask_iou.weight.zero_()
        model.roi_head.mask_iou_head.fc_mask_iou.bias.copy_(iou_of_class)
    img = _image(4)
    merged = _tta_predict(model, [(img, _sample_meta(IMG, IMG)), (img.flip(-1), _sample_meta(IMG, IMG, flip=True))])
    torch.testing.assert_close(merged.mask_scores, merged.scores * iou_of_class[merged.labels])
    assert len(set(merged.labels.tolist())) > 1  # several classes: the two rankings can differ
    assert not torch.equal(merged.mask_scores.argsort(descending=True), merged.scores.argsort(descending=True))


def test_tta_refuses_a_detector_without_htc_lite():
    class MaskRCNNLike(nn.Module):  # a detector whose RoI head is not HTCLiteRoIHead
        def __init__(self):
            super().__init__()
            self.roi_head = nn.Identity()

        def test_step(self, data):
            return []

    with pytest.raises(TypeError, match='HTCLiteRoIHead'):
        InstanceSegTTAModel(module=MaskRCNNLike())


def test_tta_end_to_end_through_the_test_time_aug_pipeline(tmp_path, scoring_model):
    """The row's kind of pipeline (mmcv TestTimeAug: 2 scales x 2 flips) into the model."""
    import mmcv
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    path = tmp_path / 'img.png'
    mmcv.imwrite(img, str(path))
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[
            [dict(type='Resize', scale=(s, s), keep_ratio=True) for s in (48, 96)],
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                   'scale_factor', 'flip', 'flip_direction'))]])])
    item = pipeline(dict(img_path=str(path), img_id=0))
    assert len(item['inputs']) == 4
    tta = InstanceSegTTAModel(module=scoring_model)
    tta.eval()
    with torch.no_grad():
        pred = tta.test_step(pseudo_collate([item]))[0].pred_instances
    assert 0 < len(pred) <= scoring_model.roi_head.test_cfg.max_per_img
    assert pred.masks.dtype == torch.bool and pred.masks.shape[1:] == (40, 56)
    assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= 56).all()
    assert (pred.bboxes[:, 1::2] >= 0).all() and (pred.bboxes[:, 1::2] <= 40).all()
    assert torch.all(pred.scores[:-1] >= pred.scores[1:]) and 'mask_scores' in pred

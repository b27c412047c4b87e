"""HTC-Lite, TSD, mask scoring in the cascade, dual-branch finetuning (seesaw_lvis.models.roi_heads).

Every test builds a tiny full detector (mmdet ``CascadeRCNN``: ResNet-18 with 8 base
channels, FPN 16 channels, 8 classes, 64 px images) through mmdet's MODELS registry and
runs it on CPU.

Deformable RoI pooling: if ``seesaw_lvis.models.ops.deform_roi_pool`` is importable it is
used; otherwise a plain grid_sample stand-in defined here is monkeypatched into the TSD head
(same signature and offset layout as mmcv's DeformRoIPool) -- see ``deform_pool``.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import InstanceData

import seesaw_lvis.models.roi_heads as rh
import seesaw_lvis.models.roi_heads.tsd_bbox_head as tsd_mod
from mmdet.registry import HOOKS, MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules

from tests.conftest import tiny_trunk

NUM_CLASSES = 8
IMG = 64
C = 16


# ---------------------------------------------------------------- deformable pooling
def _standin_deform_roi_pool(input, rois, offset, output_size, spatial_scale=1.0,
                             sampling_ratio=0, gamma=0.1):
    """Plain-PyTorch stand-in for mmcv's deform_roi_pool (aligned-style -0.5 shift, bin
    start moved by gamma * roi_size * offset, average of sr x sr bilinear samples)."""
    oh, ow = output_size
    n, ch = rois.size(0), input.size(1)
    if n == 0:
        return input.new_zeros(0, ch, oh, ow)
    sr = sampling_ratio if sampling_ratio > 0 else 2
    x1 = rois[:, 1] * spatial_scale - 0.5
    y1 = rois[:, 2] * spatial_scale - 0.5
    rw = rois[:, 3] * spatial_scale - 0.5 - x1
    rh = rois[:, 4] * spatial_scale - 0.5 - y1
    dx = gamma * rw[:, None, None] * offset[:, 0]
    dy = gamma * rh[:, None, None] * offset[:, 1]
    t = (torch.arange(sr, dtype=input.dtype) + 0.5) / sr
    py = torch.arange(oh, dtype=input.dtype)[None, :, None, None, None] + t[None, None, None, :, None]
    px = torch.arange(ow, dtype=input.dtype)[None, None, :, None, None] + t[None, None, None, None, :]
    ys = (y1[:, None, None, None, None] + py * (rh / oh)[:, None, None, None, None]
          + dy[:, :, :, None, None]).expand(n, oh, ow, sr, sr)
    xs = (x1[:, None, None, None, None] + px * (rw / ow)[:, None, None, None, None]
          + dx[:, :, :, None, None]).expand(n, oh, ow, sr, sr)
    h, w = input.shape[-2:]
    grid = torch.stack([xs / max(w - 1, 1) * 2 - 1, ys / max(h - 1, 1) * 2 - 1], -1)
    grid = grid.reshape(n, oh * ow, sr * sr, 2)
    out = F.grid_sample(input[rois[:, 0].long()], grid, mode='bilinear',
                        padding_mode='zeros', align_corners=True)
    return out.mean(-1).view(n, ch, oh, ow)


@pytest.fixture(autouse=True)
def deform_pool(monkeypatch):
    try:
        from seesaw_lvis.models.ops.deform_roi_pool import deform_roi_pool  # noqa: F401
        return 'seesaw_lvis.models.ops'
    except ImportError:
        monkeypatch.setattr(tsd_mod, '_get_deform_roi_pool', lambda: _standin_deform_roi_pool)
        return 'test stand-in'


@pytest.fixture(scope='module', autouse=True)
def _registry():
    register_all_modules(init_default_scope=True)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')
    torch.set_num_threads(1)


# ---------------------------------------------------------------- configs
CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
SEESAW = dict(type='SeesawLoss', p=0.8, q=2.0, num_classes=NUM_CLASSES, loss_weight=1.0)


def bbox_head_cfg(kind='shared2fc', loss_cls=CE, stds=(0.1, 0.1, 0.2, 0.2), **tsd_kw):
    common = dict(
        in_channels=C, fc_out_channels=32, roi_feat_size=7, num_classes=NUM_CLASSES,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                        target_stds=list(stds)),
        reg_class_agnostic=True, loss_cls=copy.deepcopy(loss_cls),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
    if kind == 'tsd':
        return dict(type='TSDBBoxHead', delta_fc_channels=32, **common, **tsd_kw)
    return dict(type='Shared2FCBBoxHead', **common)


def rcnn_train(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou,
                      min_pos_iou=iou, match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        mask_size=28, pos_weight=-1, debug=False)


def detector_cfg(kind='shared2fc', loss_cls=CE, glbctx=True, mask_iou=False,
                 finetune=False, **tsd_kw):
    stds = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    roi_head = dict(
        type='HTCLiteRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2),
            out_channels=C, featmap_strides=[4, 8, 16, 32], finest_scale=8),
        bbox_head=[bbox_head_cfg(kind, loss_cls, s, **tsd_kw) for s in stds],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=2),
            out_channels=C, featmap_strides=[4, 8, 16, 32], finest_scale=8),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=C,
                       conv_out_channels=C, num_classes=NUM_CLASSES,
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                      loss_weight=1.0)))
    if glbctx:
        roi_head['glbctx_head'] = dict(type='GlobalContextHead', num_convs=1,
                                       in_channels=C, conv_out_channels=C,
                                       num_classes=NUM_CLASSES, loss_weight=3.0)
    if mask_iou:
        roi_head['mask_iou_head'] = dict(type='MaskIoUHead', num_convs=1, num_fcs=1,
                                         roi_feat_size=14, in_channels=C,
                                         conv_out_channels=C, fc_out_channels=32,
                                         num_classes=NUM_CLASSES)
    if finetune:
        roi_head['finetune_cls_branch'] = True
    model = dict(
        type='CascadeRCNN',
        **tiny_trunk(C),
        rpn_head=dict(
            type='RPNHead', in_channels=C, feat_channels=C,
            anchor_generator=dict(type='AnchorGenerator', scales=[2], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=roi_head,
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                   min_pos_iou=0.3, match_low_quality=True,
                                   ignore_iof_thr=-1),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=0, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=64,
                              nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
            rcnn=[rcnn_train(0.5), rcnn_train(0.6), rcnn_train(0.7)]),
        test_cfg=dict(
            rpn=dict(nms_pre=100, max_per_img=32, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20, mask_thr_binary=0.5)))
    return Config(dict(model=model)).model


def build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def make_batch(seed=0, n_img=2, empty_first=False):
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n_img):
        inputs.append(torch.randint(0, 256, (3, IMG, IMG), generator=g, dtype=torch.uint8))
        boxes = torch.tensor([[4., 6., 40., 44.], [24., 20., 60., 58.]]) + i
        masks = np.zeros((2, IMG, IMG), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1 + 2:y2 - 2, x1 + 2:x2 - 2] = 1
        s = DetDataSample(metainfo=dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG),
                                        scale_factor=(1.0, 1.0), img_id=i))
        labels = torch.tensor([1 + i, 5])
        if empty_first and i == 0:
            boxes, labels, masks = boxes[:0], labels[:0], masks[:0]
        s.gt_instances = InstanceData(bboxes=boxes, labels=labels,
                                      masks=BitmapMasks(masks, IMG, IMG))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def train_losses(model, seed=0, hook=None, **batch_kw):
    model.train()
    if hook is not None:  # as mmengine's loop: model.train() at the epoch, then the hooks
        hook.before_train_iter(type('R', (), dict(model=model, logger=None))(), 0)
    data = model.data_preprocessor(make_batch(seed, **batch_kw), training=True)
    return model(**data, mode='loss')


def predict(model, seed=1):
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(make_batch(seed), training=False)
        return model(**data, mode='predict')


def total(losses):
    loss = 0
    for k, v in losses.items():
        if 'loss' in k:
            loss = loss + sum(t.sum() for t in (v if isinstance(v, list) else [v]))
    return loss


def check_finite(losses):
    for k, v in losses.items():
        for t in (v if isinstance(v, list) else [v]):
            assert torch.isfinite(t.detach()).all(), k


def check_predictions(preds, with_mask_scores=False):
    assert len(preds) == 2
    for p in preds:
        inst = p.pred_instances
        assert isinstance(inst, InstanceData)
        n = len(inst)
        assert n > 0
        assert inst.bboxes.shape == (n, 4) and inst.scores.shape == (n, )
        assert inst.labels.shape == (n, ) and int(inst.labels.max()) < NUM_CLASSES
        assert inst.masks.shape == (n, IMG, IMG)
        assert ('mask_scores' in inst) == with_mask_scores


def stage_keys(*names):
    return {f's{i}.{n}' for i in range(3) for n in names}


# ---------------------------------------------------------------- tests
def test_htc_lite_shared2fc_train_and_predict():
    model = build(detector_cfg('shared2fc'))
    rh_ = model.roi_head
    assert isinstance(rh_, rh.HTCLiteRoIHead) and not isinstance(rh_.mask_head, list)
    losses = train_losses(model)
    expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_glbctx', 'loss_mask'} | stage_keys(
        'loss_cls', 'acc', 'loss_bbox')
    assert set(losses) == expected
    check_finite(losses)
    total(losses).backward()
    assert rh_.glbctx_head.fc.weight.grad.abs().sum() > 0
    assert rh_.glbctx_head.convs[0].conv.weight.grad.abs().sum() > 0
    assert rh_.mask_head.conv_logits.weight.grad.abs().sum() > 0
    check_predictions(predict(model))


def test_global_context_is_added_to_roi_features():
    model = build(detector_cfg('shared2fc'))
    model.eval()
    rh_ = model.roi_head
    x = [torch.randn(2, C, s, s) for s in (16, 8, 4, 2, 1)]
    rois = torch.tensor([[0, 2., 2., 30., 30.], [1, 10., 12., 50., 60.]])
    g = torch.randn(2, C, 1, 1)
    with torch.no_grad():
        plain = rh_._bbox_forward(0, x, rois)['bbox_feats']
        fused = rh_._bbox_forward(0, x, rois, g)['bbox_feats']
        mplain = rh_._mask_forward(x, rois)['mask_feats']
        mfused = rh_._mask_forward(x, rois, g)['mask_feats']
    torch.testing.assert_close(fused - plain, g[[0, 1]].expand_as(plain))
    torch.testing.assert_close(mfused - mplain, g[[0, 1]].expand_as(mplain))


def test_tsd_seesaw_without_pc_cls(deform_pool):
    model = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False))
    head = model.roi_head.bbox_head[0]
    assert isinstance(head, rh.TSDBBoxHead)
    assert head.fc_cls.out_features == head.tsd_fc_cls.out_features == NUM_CLASSES + 2
    losses = train_losses(model)
    seesaw = ('loss_cls_classes', 'loss_cls_objectness', 'acc_classes', 'acc_objectness')
    expected = ({'loss_rpn_cls', 'loss_rpn_bbox', 'loss_glbctx', 'loss_mask'}
                | stage_keys(*seesaw, 'loss_bbox', 'loss_pc_loc')
                | stage_keys(*[f'sib.{k}' for k in seesaw], 'sib.loss_bbox'))
    assert set(losses) == expected, deform_pool
    check_finite(losses)
    total(losses).backward()
    for stage_head in model.roi_head.bbox_head:
        # offsets learn through the deformable pooling (zero-initialised last layers)
        assert stage_head.delta_c[-1].weight.grad.abs().sum() > 0
        assert stage_head.delta_r[-1].weight.grad.abs().sum() > 0
        assert stage_head.tsd_fc_cls.weight.grad.abs().sum() > 0
        assert stage_head.fc_cls.weight.grad.abs().sum() > 0  # sibling trained too
    check_predictions(predict(model))


def test_tsd_ce_with_progressive_constraints():
    model = build(detector_cfg('tsd', loss_cls=CE, glbctx=False))
    losses = train_losses(model)
    assert stage_keys('loss_cls', 'acc', 'loss_bbox', 'loss_pc_cls', 'loss_pc_loc',
                      'sib.loss_cls', 'sib.acc', 'sib.loss_bbox') <= set(losses)
    assert 'loss_glbctx' not in losses
    check_finite(losses)
    assert all(losses[f's{i}.loss_pc_cls'] >= 0 for i in range(3))
    total(losses).backward()
    check_predictions(predict(model))


def test_tsd_sibling_runs_in_training_only_and_decodes_against_shifted_rois():
    model = build(detector_cfg('tsd', glbctx=False))
    rh_ = model.roi_head
    head = rh_.bbox_head[0]
    x = [torch.randn(1, C, s, s) for s in (16, 8, 4, 2, 1)]
    rois = torch.tensor([[0, 8., 8., 40., 32.], [0, 20., 10., 36., 50.]])
    # a hand-set whole-box shift (dx, dy) = (1, -2) and zero regression deltas
    with torch.no_grad():
        head.delta_r[-1].weight.zero_()
        head.delta_r[-1].bias.copy_(torch.tensor([1.0, -2.0]))
        head.tsd_fc_reg.weight.zero_()
        head.tsd_fc_reg.bias.zero_()
    model.eval()
    with torch.no_grad():
        out = rh_._bbox_forward(0, x, rois)
    assert 'cls_score_sib' not in out
    w, h = rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]
    expect = rois.clone()
    expect[:, [1, 3]] += (0.1 * w * 1.0)[:, None]
    expect[:, [2, 4]] += (0.1 * h * -2.0)[:, None]
    torch.testing.assert_close(out['reg_rois'], expect)
    boxes = head.regress_by_class(out['reg_rois'][:, 1:], torch.zeros(2, dtype=torch.long),
                                  out['bbox_pred'], dict(img_shape=(IMG, IMG)))
    torch.testing.assert_close(boxes, expect[:, 1:].clamp(0, IMG))
    model.train()
    out = rh_._bbox_forward(0, x, rois)
    assert {'cls_score_sib', 'bbox_pred_sib'} <= set(out)


def test_tsd_regression_targets_use_shifted_rois():
    """The TSD branch's regression loss is zero exactly when its deltas encode the gt box
    w.r.t. the SHIFTED RoI."""
    from mmdet.models.task_modules.samplers import SamplingResult
    cfg = bbox_head_cfg('tsd', CE, pc_cls=False, pc_loc=False)
    head = MODELS.build(cfg)
    rois = torch.tensor([[0, 10., 10., 30., 40.], [0, 0., 0., 20., 20.]])
    gt = torch.tensor([[12., 9., 33., 41.]])
    res = SamplingResult(pos_inds=torch.tensor([0]), neg_inds=torch.tensor([1]),
                         priors=rois[:, 1:], gt_bboxes=gt,
                         assign_result=type('A', (), dict(
                             gt_inds=torch.tensor([1, 0]), labels=torch.tensor([3, -1]),
                             num_gts=1))(),
                         gt_flags=torch.zeros(2, dtype=torch.uint8))
    reg_rois = rois.clone()
    reg_rois[:, [1, 3]] += 2.0
    perfect = head.bbox_coder.encode(reg_rois[:1, 1:], gt)
    n_cls = NUM_CLASSES + 1
    out = dict(cls_score=torch.zeros(2, n_cls), cls_score_sib=torch.zeros(2, n_cls),
               bbox_pred=torch.cat([perfect, torch.zeros(1, 4)]),
               bbox_pred_sib=torch.zeros(2, 4), reg_rois=reg_rois)
    train_cfg = Config(dict(c=dict(pos_weight=-1))).c
    losses = head.loss_and_target_tsd(out, rois, [res], train_cfg)['loss_bbox']
    assert float(losses['loss_bbox']) == pytest.approx(0.0, abs=1e-6)
    assert float(losses['sib.loss_bbox']) > 0
    assert 'loss_pc_cls' not in losses and 'loss_pc_loc' not in losses

    # progressive constraints by hand: equal (uniform) class scores -> the cls loss is the
    # margin min(1 - 1/9, 0.3); a perfect sibling box and a TSD box = its shifted RoI ->
    # the loc loss is relu(-(IoU(shifted RoI, gt) - 1 - min(1 - 1, 0.3)))
    pc_head = MODELS.build(bbox_head_cfg('tsd', CE))
    out.update(bbox_pred=torch.zeros(2, 4),
               bbox_pred_sib=torch.cat([head.bbox_coder.encode(rois[:1, 1:], gt),
                                        torch.zeros(1, 4)]))
    losses = pc_head.loss_and_target_tsd(out, rois, [res], train_cfg)['loss_bbox']
    assert float(losses['loss_pc_cls']) == pytest.approx(0.3, abs=1e-6)
    from mmdet.structures.bbox import bbox_overlaps
    iou_t = float(bbox_overlaps(reg_rois[:1, 1:], gt, is_aligned=True)[0])
    assert float(losses['loss_pc_loc']) == pytest.approx(1 - iou_t, abs=1e-5)


def test_mask_scoring_in_cascade():
    model = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False, mask_iou=True))
    losses = train_losses(model)
    assert 'loss_mask_iou' in losses and 'loss_mask' in losses
    check_finite(losses)
    total(losses).backward()
    iou_head = model.roi_head.mask_iou_head
    assert iou_head.fc_mask_iou.weight.grad is not None
    # hand-set IoU prediction 0.5 for every class: mask score = 0.5 x box score
    with torch.no_grad():
        iou_head.fc_mask_iou.weight.zero_()
        iou_head.fc_mask_iou.bias.fill_(0.5)
    preds = predict(model)
    check_predictions(preds, with_mask_scores=True)
    for p in preds:
        inst = p.pred_instances
        torch.testing.assert_close(inst.mask_scores, 0.5 * inst.scores)
    # without the mask IoU head: same boxes and box scores, no mask_scores
    plain = detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False, mask_iou=False)
    model2 = build(plain)
    model2.load_state_dict(model.state_dict(), strict=False)
    for p, q in zip(preds, predict(model2)):
        torch.testing.assert_close(p.pred_instances.scores, q.pred_instances.scores)
        assert 'mask_scores' not in q.pred_instances


def test_image_without_annotations():
    model = build(detector_cfg('tsd', loss_cls=SEESAW, mask_iou=True))
    losses = train_losses(model, empty_first=True)
    check_finite(losses)
    total(losses).backward()


def _seesaw_state(seed=0, **kw):
    """The 'Seesaw row' model and its state dict (stands in for its checkpoint)."""
    model = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False, **kw), seed=seed)
    train_losses(model)  # moves Seesaw's counts and BN stats away from their init
    return model.state_dict()


def test_finetune_trains_only_new_branch_and_freezes_bn():
    state = _seesaw_state()
    model = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False, finetune=True), seed=3)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert missing and all(k.startswith('roi_head.ft_cls_branches.')
                           or k == 'roi_head.ft_initialized' for k in missing)
    hook = HOOKS.build(dict(type='FreezeForFinetuneHook'))
    runner = type('R', (), dict(model=model, logger=None))()
    hook.before_train(runner)
    model.train()
    hook.before_train_iter(runner, 0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    losses = train_losses(model, hook=hook)
    assert not any(m.training for m in bns)
    # copied from the original branches at the first step
    rh_ = model.roi_head
    for br, head in zip(rh_.ft_cls_branches, rh_.bbox_head):
        torch.testing.assert_close(br.fc_cls.weight, head.tsd_fc_cls.weight)
        torch.testing.assert_close(br.fcs[0].weight, head.tsd_cls_fcs[0].weight)
    assert int(rh_.ft_initialized) == 1
    roi_keys = {k for k in losses if not k.startswith('loss_rpn')}
    assert roi_keys == stage_keys('ft.loss_cls_classes', 'ft.loss_cls_objectness',
                                  'ft.acc_classes', 'ft.acc_objectness')
    check_finite(losses)
    opt.zero_grad()
    total(losses).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, 'the new branches did not train'
    allowed = ('roi_head.ft_cls_branches.', 'roi_head.ft_initialized')
    assert all(k.startswith(allowed) for k in changed), sorted(changed)
    assert any(k.endswith('fc_cls.weight') for k in changed)
    # BN running statistics and the original Seesaw counts untouched
    for k in before:
        if 'running_' in k or 'num_batches_tracked' in k or k.endswith('cum_samples'):
            if not k.startswith(allowed):
                assert torch.equal(before[k], after[k]), k


def test_finetune_scores_are_mean_of_both_branches():
    state = _seesaw_state()
    base = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False))
    base.load_state_dict(state)
    model = build(detector_cfg('tsd', loss_cls=SEESAW, pc_cls=False, finetune=True))
    model.load_state_dict(state, strict=False)
    rh_ = model.roi_head
    bias = torch.linspace(-1, 1, NUM_CLASSES + 2)
    with torch.no_grad():
        for br in rh_.ft_cls_branches:  # hand-set branch: constant logits = bias
            br.fc_cls.weight.zero_()
            br.fc_cls.bias.copy_(bias)
    base.eval()
    model.eval()
    x_in = model.data_preprocessor(make_batch(2), training=False)
    with torch.no_grad():
        x = model.extract_feat(x_in['inputs'])
        props = model.rpn_head.predict(x, x_in['data_samples'], rescale=False)
        metas = [s.metainfo for s in x_in['data_samples']]
        _, g = rh_._glbctx(x)
        rois = torch.cat([torch.cat([p.bboxes.new_full((len(p), 1), i), p.bboxes], 1)
                          for i, p in enumerate(props)])
        num = [len(p) for p in props]
        res = rh_._cascade(x, rois, metas, num, g)
        res_base = base.roi_head._cascade(x, rois, metas, num, g)
    act_bias = rh_.bbox_head[-1].loss_cls.get_activation(bias[None])[0]
    for i in range(2):
        torch.testing.assert_close(res['scores_orig'][i], res_base['scores'][i])
        torch.testing.assert_close(res['scores_ft'][i], act_bias.expand_as(res['scores_ft'][i]))
        torch.testing.assert_close(res['scores'][i],
                                   (res_base['scores'][i] + act_bias) / 2)
    check_predictions(predict(model))


def test_finetune_branch_for_plain_shared2fc_heads():
    model = build(detector_cfg('shared2fc', finetune=True, glbctx=False))
    rh_ = model.roi_head
    assert rh_.ft_cls_branches[0].kind == 'convfc'
    losses = train_losses(model)
    assert stage_keys('ft.loss_cls', 'ft.acc') == {k for k in losses if k.startswith('s')}
    total(losses).backward()
    # the copied branch reproduces the original logits exactly
    x = [torch.randn(1, C, s, s) for s in (16, 8, 4, 2, 1)]
    rois = torch.tensor([[0, 8., 8., 40., 32.]])
    model.eval()
    with torch.no_grad():
        out = rh_._bbox_forward(1, x, rois)
        torch.testing.assert_close(rh_.ft_cls_branches[1](out), out['cls_score'])

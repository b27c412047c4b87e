"""Seesaw Loss, EQL and the tau-normalised classifier (src/seesaw_lvis/models/).

The reference for the Seesaw Loss is mmdet 3.3.0's own ``SeesawLoss``, run side by side
on the same inputs and label streams. Tolerance for fp32: ``|a - b| <= 1e-6 + 1e-6 |b|``
(absolute 1e-6 for O(1) values; relative for sums, whose rounding grows with them).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import seesaw_lvis.models  # noqa: F401  (registers DistSeesawLoss and EQLoss)
from mmdet.models.layers.normed_predictor import NormedLinear as MMNormedLinear
from mmdet.models.losses.accuracy import accuracy as mm_accuracy
from mmdet.models.losses.seesaw_loss import SeesawLoss as MMSeesawLoss
from mmdet.registry import MODELS
from seesaw_lvis.models.losses import (LAMBDA_LVIS_V05, LAMBDA_LVIS_V1, EQLoss, SeesawLoss,
                                       label_histogram, load_class_freq)

TOL = dict(rtol=1e-6, atol=1e-6)


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **(kw or TOL))


def long_tail_labels(gen, n, C, bg_frac=0.5, s=1.2):
    """Labels with a long-tailed foreground part (class k ~ (k+1)^-s) and some background."""
    probs = torch.arange(1, C + 1, dtype=torch.float64).pow(-s)
    y = torch.multinomial(probs, n, replacement=True, generator=gen)
    bg = torch.rand(n, generator=gen) < bg_frac
    return torch.where(bg, torch.full_like(y, C), y)


def run_pair(ours, theirs, x, labels, **kw):
    """Loss dicts and input gradients of both implementations on the same logits."""
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    la = ours(xa, labels, **kw)
    lb = theirs(xb, labels, **kw)
    ga = torch.autograd.grad(sum(1.3 * v.sum() if "classes" in k else 0.7 * v.sum()
                                 for k, v in la.items()), xa, allow_unused=True)[0]
    gb = torch.autograd.grad(sum(1.3 * v.sum() if "classes" in k else 0.7 * v.sum()
                                 for k, v in lb.items()), xb, allow_unused=True)[0]
    return la, lb, ga, gb


# --------------------------------------------------------------------------- Seesaw vs mmdet
@pytest.mark.parametrize("compact", [True, False], ids=["gather", "masked"])
@pytest.mark.parametrize("q", [0.0, 2.0])
@pytest.mark.parametrize("bg_frac", [0.0, 0.6], ids=["fg_only", "with_bg"])
def test_seesaw_equals_mmdet_over_iterations(compact, q, bg_frac):
    C, N = 40, 96
    gen = torch.Generator().manual_seed(int(q * 10) + int(bg_frac * 100) + compact)
    ours = SeesawLoss(num_classes=C, q=q)
    ours.compact_positives = compact
    theirs = MMSeesawLoss(num_classes=C, q=q)
    variants = [
        dict(),                                                 # mean over samples
        dict(label_weights=None, avg_factor=float(N)),
        dict(avg_factor=57.0),                                  # random label weights below
        dict(reduction_override="sum"),
        dict(reduction_override="none"),
    ]
    for it in range(10):
        labels = long_tail_labels(gen, N, C, bg_frac)
        x = torch.randn(N, C + 2, generator=gen) * 3.0
        kw = dict(variants[it % len(variants)])
        if "label_weights" not in kw:
            kw["label_weights"] = torch.rand(N, generator=gen)
        la, lb, ga, gb = run_pair(ours, theirs, x, labels, **kw)
        assert la.keys() == lb.keys() == {"loss_cls_objectness", "loss_cls_classes"}
        for k in la:
            assert la[k].shape == lb[k].shape, (k, kw)
            close(la[k], lb[k].float())
        close(ga, gb)
        close(ours.cum_samples.float(), theirs.cum_samples)
        assert ours.cum_samples.dtype == torch.long


@pytest.mark.parametrize("compact", [True, False], ids=["gather", "masked"])
def test_seesaw_all_background_batch(compact):
    C = 10
    ours, theirs = SeesawLoss(num_classes=C), MMSeesawLoss(num_classes=C)
    ours.compact_positives = compact
    labels = torch.full((8,), C)
    x = torch.randn(8, C + 2)
    la, lb, ga, gb = run_pair(ours, theirs, x, labels, label_weights=torch.ones(8),
                              avg_factor=8.0)
    assert float(la["loss_cls_classes"]) == 0.0 == float(lb["loss_cls_classes"])
    close(la["loss_cls_objectness"], lb["loss_cls_objectness"])
    close(ga, gb)
    assert int(ours.cum_samples[C]) == 8


def test_seesaw_return_sum_and_loss_weight():
    C = 12
    gen = torch.Generator().manual_seed(3)
    ours = SeesawLoss(num_classes=C, loss_weight=2.5, return_dict=False)
    theirs = MMSeesawLoss(num_classes=C, loss_weight=2.5, return_dict=False)
    for _ in range(3):
        labels = long_tail_labels(gen, 50, C)
        x = torch.randn(50, C + 2, generator=gen)
        close(ours(x, labels, torch.ones(50), avg_factor=50.0),
              theirs(x, labels, torch.ones(50), avg_factor=50.0))


@pytest.mark.parametrize("compact", [True, False], ids=["gather", "masked"])
def test_seesaw_backward_twice_with_retain_graph(compact):
    C = 9
    gen = torch.Generator().manual_seed(8)
    loss = SeesawLoss(num_classes=C)
    loss.compact_positives = compact
    x = torch.randn(40, C + 2, generator=gen, requires_grad=True)
    total = sum(loss(x, long_tail_labels(gen, 40, C)).values())
    g1 = torch.autograd.grad(total, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(total, x)[0]
    assert torch.equal(g1, g2)


# --------------------------------------------------------------------------- analytic cases
def test_p0_q0_is_softmax_ce_on_classes():
    C, N = 15, 64
    gen = torch.Generator().manual_seed(1)
    loss = SeesawLoss(num_classes=C, p=0.0, q=0.0)
    labels = long_tail_labels(gen, N, C, 0.4)
    x = torch.randn(N, C + 2, generator=gen) * 4
    out = loss(x, labels)
    pos = labels < C
    close(out["loss_cls_classes"], F.cross_entropy(x[pos, :C], labels[pos]))
    close(out["loss_cls_objectness"], F.cross_entropy(x[:, C:], (labels == C).long()))


def test_mitigation_factor_by_hand():
    """N = [100, 10, 1] after the update; one sample of class 0, all logits 0, q = 0:
    sigma_0 = 1 / (1 + (10/100)^0.8 + (1/100)^0.8)  (eq. 1-2). A sample of the rarest
    class sees S = 1 everywhere (N_2 <= N_j): plain CE, log 3."""
    loss = SeesawLoss(num_classes=3, p=0.8, q=0.0)
    loss.cum_samples.copy_(torch.tensor([99, 10, 1, 0]))
    out = loss(torch.zeros(1, 5), torch.tensor([0]))
    expected = -math.log(1.0 / (1.0 + 0.1 ** 0.8 + 0.01 ** 0.8))
    assert out["loss_cls_classes"].item() == pytest.approx(expected, rel=1e-6)
    assert loss.cum_samples.tolist() == [100, 10, 1, 0]

    loss.cum_samples.copy_(torch.tensor([100, 10, 0, 0]))
    out = loss(torch.zeros(1, 5), torch.tensor([2]))
    assert out["loss_cls_classes"].item() == pytest.approx(math.log(3.0), rel=1e-6)


def test_compensation_factor_by_hand():
    """p = 0, q = 2, label 0 with logits (0, 1, -1): s_1 > s_0, so class 1 is penalised by
    (s_1/s_0)^2 = e^2; class 2 (s_2 < s_0) keeps factor 1. Detached: gradient is
    softmax(z + log S) - onehot."""
    loss = SeesawLoss(num_classes=3, p=0.0, q=2.0)
    z = torch.tensor([[0.0, 1.0, -1.0, 0.3, -0.3]], requires_grad=True)
    out = loss(z, torch.tensor([0]))
    adj = torch.tensor([0.0, 1.0 + 2.0, -1.0])  # z_1 + log(e^2)
    expected = -torch.log_softmax(adj, 0)[0]
    assert out["loss_cls_classes"].item() == pytest.approx(expected.item(), rel=1e-6)
    out["loss_cls_classes"].backward()
    close(z.grad[0, :3], torch.softmax(adj, 0) - torch.tensor([1.0, 0, 0]))
    # eps floor: self score below eps -> divide by eps
    loss = SeesawLoss(num_classes=2, p=0.0, q=1.0, eps=0.5)
    z = torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    s = torch.softmax(z[0, :2], 0)
    expected = -torch.log_softmax(torch.tensor([0.0, 3.0 + math.log(s[1] / 0.5)]), 0)[0]
    assert loss(z, torch.tensor([0]))["loss_cls_classes"].item() == pytest.approx(
        expected.item(), rel=1e-6)


@pytest.mark.parametrize("compact", [True, False], ids=["gather", "masked"])
def test_extreme_logits_fp32_finite(compact):
    C, N = 30, 64
    gen = torch.Generator().manual_seed(5)
    loss = SeesawLoss(num_classes=C)
    loss.compact_positives = compact
    for _ in range(3):
        labels = long_tail_labels(gen, N, C)
        x = (torch.randint(0, 2, (N, C + 2), generator=gen).float() * 2 - 1) * 1e4
        x.requires_grad_()
        out = loss(x, labels, torch.ones(N), avg_factor=float(N))
        total = sum(out.values())
        total.backward()
        assert torch.isfinite(total) and torch.isfinite(x.grad).all()


def _autocast_dtypes():
    dts = [torch.bfloat16]
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        dts.append(torch.float16)
    except (RuntimeError, AssertionError):  # pragma: no cover - depends on torch build
        pass
    return dts


@pytest.mark.parametrize("dtype", _autocast_dtypes(), ids=str)
@pytest.mark.parametrize("compact", [True, False], ids=["gather", "masked"])
def test_autocast_extreme_logits(dtype, compact):
    """Logits come out of an autocast matmul in low precision, at +-1e4: loss and all
    gradients finite; the low-precision gradient dtype is kept."""
    C, N, D = 25, 48, 16
    gen = torch.Generator().manual_seed(7)
    loss = SeesawLoss(num_classes=C)
    loss.compact_positives = compact
    fc = torch.nn.Linear(D, C + 2)
    with torch.no_grad():
        fc.weight.copy_(torch.sign(torch.randn(C + 2, D, generator=gen)) * 625.0)
        fc.bias.zero_()
    feats = torch.ones(N, D)  # logits = +-1e4 - ish
    for _ in range(3):
        labels = long_tail_labels(gen, N, C)
        fc.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            logits = fc(feats)
            assert logits.dtype == dtype
            assert logits.abs().max() >= 1e3
            out = loss(logits, labels, torch.ones(N), avg_factor=float(N))
        total = sum(out.values())
        assert total.dtype == torch.float32 and torch.isfinite(total)
        total.backward()
        assert torch.isfinite(fc.weight.grad).all() and torch.isfinite(fc.bias.grad).all()
    # the same, fed a low-precision tensor directly
    x = (torch.randn(N, C + 2, generator=gen).sign() * 1e4).to(dtype).requires_grad_()
    out = loss(x, long_tail_labels(gen, N, C))
    sum(out.values()).backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


# --------------------------------------------------------------------------- counts / state
def test_counts_are_a_histogram_without_host_sync(monkeypatch):
    """Counts = label histogram; the masked (GPU) path never calls .item/.unique/nonzero/
    bool() from Python, i.e. has no host synchronisation point of its own."""
    C = 20
    gen = torch.Generator().manual_seed(11)
    labels = long_tail_labels(gen, 200, C)
    ref = torch.bincount(labels, minlength=C + 1)
    assert torch.equal(label_histogram(labels, C + 1), ref)
    assert torch.equal(label_histogram(labels, C + 1, scatter=True), ref)
    with pytest.raises(ValueError):
        label_histogram(torch.tensor([0, C + 1]), C + 1)

    loss = SeesawLoss(num_classes=C)
    loss.compact_positives = False
    x = torch.randn(200, C + 2, generator=gen, requires_grad=True)

    def boom(*a, **k):
        raise AssertionError("host sync")

    for name in ("item", "unique", "nonzero", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    monkeypatch.setattr(torch, "nonzero", boom)
    monkeypatch.setattr(torch, "unique", boom)
    out = loss(x, labels, torch.ones(200), avg_factor=200.0)
    sum(out.values()).backward()
    monkeypatch.undo()
    assert torch.equal(loss.cum_samples, ref)


def test_counts_state_dict_round_trip():
    C = 8
    gen = torch.Generator().manual_seed(2)
    a = SeesawLoss(num_classes=C)
    for _ in range(4):
        a(torch.randn(30, C + 2, generator=gen), long_tail_labels(gen, 30, C))
    sd = a.state_dict()
    assert set(sd) == {"cum_samples"} and sd["cum_samples"].dtype == torch.long
    assert int(sd["cum_samples"].sum()) == 120
    b = SeesawLoss(num_classes=C)
    b.load_state_dict(sd)
    assert torch.equal(b.cum_samples, a.cum_samples)
    # the float buffer of an mmdet checkpoint loads into ours, and ours into mmdet's
    m = MMSeesawLoss(num_classes=C)
    m.load_state_dict(sd)
    close(m.cum_samples, a.cum_samples.float())
    c = SeesawLoss(num_classes=C)
    c.load_state_dict(m.state_dict())
    assert torch.equal(c.cum_samples, a.cum_samples)
    # a fresh buffer after a round trip through torch.save
    import io
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    d = SeesawLoss(num_classes=C)
    d.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(d.cum_samples, a.cum_samples)
    assert a.half().cum_samples.dtype == torch.long  # .half() cannot round the counts


def test_activation_channels_accuracy_equal_mmdet():
    C = 17
    gen = torch.Generator().manual_seed(4)
    ours, theirs = SeesawLoss(num_classes=C), MMSeesawLoss(num_classes=C)
    for attr in ("custom_cls_channels", "custom_activation", "custom_accuracy"):
        assert getattr(ours, attr) is True is getattr(theirs, attr)
    assert ours.get_cls_channels(C) == theirs.get_cls_channels(C) == C + 2
    x = torch.randn(33, C + 2, generator=gen) * 5
    act = ours.get_activation(x)
    close(act, theirs.get_activation(x))
    assert act.shape == (33, C + 1)
    close(act.sum(-1), torch.ones(33))  # eq. (4): sum_i P(i|fg) P(fg) + P(bg) = 1
    labels = long_tail_labels(gen, 33, C)
    acc_a, acc_b = ours.get_accuracy(x, labels), theirs.get_accuracy(x, labels)
    assert acc_a.keys() == acc_b.keys() == {"acc_objectness", "acc_classes"}
    for k in acc_a:
        close(acc_a[k], acc_b[k])
    close(acc_a["acc_objectness"], mm_accuracy(x[:, C:], (labels == C).long()))


# --------------------------------------------------------------------------- registry
def test_registry_builds_ours_and_mmdet_side_by_side():
    assert MODELS.get("SeesawLoss") is MMSeesawLoss
    ours = MODELS.build(dict(type="DistSeesawLoss", num_classes=9, p=0.8, q=2.0,
                             sync_counts=False))
    assert type(ours) is SeesawLoss and ours.num_classes == 9 and not ours.sync_counts
    theirs = MODELS.build(dict(type="SeesawLoss", num_classes=9))
    assert type(theirs) is MMSeesawLoss
    eql = MODELS.build(dict(type="EQLoss", num_classes=3, class_freq=[0.5, 1e-4, 0.2]))
    assert type(eql) is EQLoss
    assert MODELS.get("NormedLinear") is MMNormedLinear  # the configs' classifier (eq. 3)


@pytest.mark.parametrize("loss_cfg,width,loss_keys", [
    (dict(type="DistSeesawLoss", p=0.8, q=2.0), 2,
     ("loss_cls_objectness", "loss_cls_classes", "acc_objectness", "acc_classes")),
    (dict(type="EQLoss", class_freq=[0.3, 0.2, 1e-4, 0.1, 5e-4, 0.4, 0.05]), 1,
     ("loss_cls", "acc")),
], ids=["seesaw", "eql"])
def test_bbox_head_with_normed_classifier(loss_cfg, width, loss_keys):
    """The config pattern of the report: Shared2FC head with the tau-normalised classifier
    and our loss: classifier width from the loss, loss and accuracy keys, gradients, and
    the head's inference scores = the loss's activation (not mmdet's default softmax)."""
    C = 7
    head = MODELS.build(dict(
        type="Shared2FCBBoxHead", in_channels=4, fc_out_channels=16, roi_feat_size=2,
        num_classes=C, reg_class_agnostic=True,
        cls_predictor_cfg=dict(type="NormedLinear", tempearture=20),
        loss_cls=dict(num_classes=C, **loss_cfg),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_bbox=dict(type="SmoothL1Loss", loss_weight=1.0)))
    assert isinstance(head.fc_cls, MMNormedLinear) and head.fc_cls.out_features == C + width
    n = 12
    cls_score, bbox_pred = head(torch.randn(n, 4, 2, 2))
    assert cls_score.shape == (n, C + width) and cls_score.abs().max() <= 20.0 + 1e-4
    labels = torch.tensor([0, 1, 2, 3, C, C, C, C, C, 6, 6, C])
    rois = torch.cat([torch.zeros(n, 1), torch.rand(n, 2) * 10, 10 + torch.rand(n, 2) * 10], 1)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n),
                       torch.zeros(n, 4), torch.ones(n, 4))
    for k in loss_keys + ("loss_bbox",):
        assert k in losses, k
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    assert torch.isfinite(head.fc_cls.weight.grad).all()
    if hasattr(head.loss_cls, "cum_samples"):
        assert int(head.loss_cls.cum_samples.sum()) == n
    with torch.no_grad():
        res = head.predict_by_feat((rois,), (cls_score.detach(),), (bbox_pred.detach(),),
                                   [dict(img_shape=(40, 40), scale_factor=(1.0, 1.0))],
                                   rcnn_test_cfg=None)
    close(res[0].scores, head.loss_cls.get_activation(cls_score.detach()))


# --------------------------------------------------------------------------- normed linear
def test_mmdet_normed_linear_is_eq_3():
    """The configs use mmdet's NormedLinear (argument spelled ``tempearture``): it is the
    report's eq. (3), z = tau * (W_i / ||W_i||)^T (x / ||x||) + b_i, up to mmdet's +1e-6 on
    the norms, and starts from N(0, 0.01) weights and zero bias."""
    gen = torch.Generator().manual_seed(9)
    lin = MMNormedLinear(6, 5, tempearture=20)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(5, 6, generator=gen))
        lin.bias.copy_(torch.randn(5, generator=gen))
    x = torch.randn(4, 6, generator=gen)
    w = lin.weight.detach()
    formula = 20.0 * (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T + lin.bias.detach()
    close(lin(x), formula, rtol=1e-5, atol=1e-5)
    fresh = MMNormedLinear(64, 100, tempearture=20)
    assert fresh.bias.abs().max() == 0 and 0.005 < float(fresh.weight.std()) < 0.015


# --------------------------------------------------------------------------- EQL
def _bce(x, y):
    return -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))


FREQ = [0.5, 0.001, 0.0005]  # class 0 frequent; 1 and 2 below lambda = 1.76e-3


def test_eql_hand_computed():
    loss = EQLoss(num_classes=3, lambda_=LAMBDA_LVIS_V05, class_freq=FREQ)
    assert loss.tail_mask.tolist() == [0.0, 1.0, 1.0]
    x = torch.tensor([[0.2, -0.4, 0.9, 5.0],     # label 0 (frequent)
                      [-1.0, 0.3, 0.1, 5.0],     # label 1 (tail)
                      [0.7, -0.2, 1.5, 5.0]],    # background
                     requires_grad=True)
    labels = torch.tensor([0, 1, 3])
    # w for label 0: [1, 0, 0] (tail negatives removed); label 1: [1, 1, 0] (own positive
    # kept, other tail negative removed, frequent negative kept); background: [1, 1, 1]
    rows = [
        _bce(0.2, 1),
        _bce(-1.0, 0) + _bce(0.3, 1),
        _bce(0.7, 0) + _bce(-0.2, 0) + _bce(1.5, 0),
    ]
    out = loss(x, labels)
    assert out.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    out.backward()
    g = x.grad
    sig = torch.sigmoid(x.detach())
    # a rare class j gets no gradient from a foreground sample of another class ...
    assert g[0, 1] == 0 and g[0, 2] == 0 and g[1, 2] == 0
    # ... but a background proposal still suppresses it (E(r) = 0)
    close(g[2, :3], sig[2, :3] / 3)
    close(g[1, 1], (sig[1, 1] - 1) / 3)
    assert torch.all(g[:, 3] == 0)  # the extra (C+1-th) column is ignored
    # weights exposed as in the paper
    close(loss.eql_weights(labels), torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]]))


def test_eql_reductions_weights_and_width():
    loss = EQLoss(num_classes=3, lambda_=LAMBDA_LVIS_V05, class_freq=FREQ, loss_weight=2.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    w = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.0, 1.0])
    el = loss(x, labels, reduction_override="none") / 2.0
    assert el.shape == (6, 3)
    close(loss(x, labels, w, reduction_override="sum"), 2.0 * (el * w[:, None]).sum())
    close(loss(x, labels, w, avg_factor=5.0),
          2.0 * (el * w[:, None]).sum() / (5.0 + torch.finfo(torch.float32).eps))
    close(loss(x, labels), 2.0 * el.sum() / 6)
    close(loss(x[:, :3], labels), loss(x, labels))  # width C or C + 1
    with pytest.raises(ValueError):
        loss(torch.randn(6, 5), labels)
    # with lambda below every frequency it is plain sigmoid CE on the C classes
    plain = EQLoss(num_classes=3, lambda_=1e-6, class_freq=FREQ)
    target = F.one_hot(labels, 4)[:, :3].float()
    close(plain(x, labels), F.binary_cross_entropy_with_logits(x[:, :3], target,
                                                               reduction="sum") / 6)
    # autocast / extreme logits
    xe = (torch.randn(6, 4, generator=gen).sign() * 1e4).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(xe, labels)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(xe.grad.float()).all()


def test_eql_head_hooks():
    loss = EQLoss(num_classes=3, class_freq=FREQ)
    assert loss.lambda_ == LAMBDA_LVIS_V1 == 1.1e-3 and LAMBDA_LVIS_V05 == 1.76e-3
    assert loss.custom_cls_channels and loss.get_cls_channels(3) == 4
    x = torch.tensor([[3.0, -3.0, -3.0, 9.0], [-3.0, -3.0, -3.0, 9.0]])
    act = loss.get_activation(x)
    close(act, torch.cat([torch.sigmoid(x[:, :3]), torch.zeros(2, 1)], 1))
    acc = loss.get_accuracy(x, torch.tensor([0, 3]))
    assert acc["acc"].item() == pytest.approx(100.0)
    acc = loss.get_accuracy(x, torch.tensor([1, 0]))
    assert acc["acc"].item() == pytest.approx(0.0)


def test_eql_frequency_sources(tmp_path):
    cats = [{"id": 3, "image_count": 1}, {"id": 1, "image_count": 500},
            {"id": 2, "image_count": 2}]
    p = tmp_path / "freq.json"
    p.write_text(json.dumps({"num_images": 1000, "categories": cats}))
    assert load_class_freq(p) == [0.5, 0.002, 0.001]
    p2 = tmp_path / "lvis_like.json"
    p2.write_text(json.dumps({"images": [{"id": i} for i in range(1000)], "categories": cats}))
    assert load_class_freq(p2) == [0.5, 0.002, 0.001]
    p3 = tmp_path / "freq.csv"
    p3.write_text("id,image_count,num_images\n2,2,1000\n1,500,1000\n3,1,1000\n")
    assert load_class_freq(p3) == [0.5, 0.002, 0.001]
    p4 = tmp_path / "list.json"
    p4.write_text(json.dumps({"class_freq": [0.5, 0.002, 0.001]}))
    built = MODELS.build(dict(type="EQLoss", num_classes=3, freq_file=str(p4),
                              lambda_=LAMBDA_LVIS_V05))
    assert built.tail_mask.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        EQLoss(num_classes=4, freq_file=p)
    with pytest.raises(ValueError):
        EQLoss(num_classes=3)
    with pytest.raises(ValueError):
        EQLoss(num_classes=3, class_freq=[0.5, 2.0, 0.1])
    assert "tail_mask" not in built.state_dict()

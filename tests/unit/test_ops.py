"""CPU CARAFE / CARAFE++ downsampling / deformable RoI pooling against slow references."""
from __future__ import annotations

import math

import pytest
import torch

from seesaw_lvis.models.ops import DeformRoIPoolAnyDevice, carafe_cpu, carafe_down_cpu
from seesaw_lvis.models.ops.carafe import carafe
from seesaw_lvis.models.ops.deform_roi_pool import deform_roi_pool, deform_roi_pool_cpu


# ------------------------------------------------------------------------------ references
def naive_carafe(f, m, k, g, s):
    """Literal transcription of mmcv's carafe_naive_forward CUDA kernel (one output at a time)."""
    n, c, h, w = f.shape
    out = f.new_zeros(n, c, h * s, w * s)
    r = (k - 1) // 2
    cg = c // g
    for b in range(n):
        for ch in range(c):
            grp = ch // cg
            for ph in range(h * s):
                for pw in range(w * s):
                    dh, dw = ph // s, pw // s
                    acc = 0.0
                    for iy in range(dh - r, dh + r + 1):
                        for ix in range(dw - r, dw + r + 1):
                            if iy < 0 or iy > h - 1 or ix < 0 or ix > w - 1:
                                continue
                            mc = (grp * k + iy - dh + r) * k + ix - dw + r
                            acc += f[b, ch, iy, ix] * m[b, mc, ph, pw]
                    out[b, ch, ph, pw] = acc
    return out


def naive_carafe_down(f, m, k, g, s):
    n, c, h, w = f.shape
    ho, wo = m.shape[-2:]
    out = f.new_zeros(n, c, ho, wo)
    r = (k - 1) // 2
    cg = c // g
    for b in range(n):
        for ch in range(c):
            grp = ch // cg
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0
                    for i in range(k):
                        for j in range(k):
                            y, x = s * oy + i - r, s * ox + j - r
                            if 0 <= y < h and 0 <= x < w:
                                acc += f[b, ch, y, x] * m[b, grp * k * k + i * k + j, oy, ox]
                    out[b, ch, oy, ox] = acc
    return out


def _bilinear(img, y, x):
    """mmcv's bilinear_interpolate (common_cuda_helper.hpp), one channel map."""
    height, width = img.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * img[y_low, x_low] + hy * lx * img[y_low, x_high]
            + ly * hx * img[y_high, x_low] + ly * lx * img[y_high, x_high])


def naive_deform_roi_pool(inp, rois, offset, out_size, scale, sr, gamma):
    """Per-bin transcription of mmcv's deform_roi_pool_forward CUDA kernel."""
    ph_, pw_ = out_size
    out = inp.new_zeros(rois.size(0), inp.size(1), ph_, pw_)
    for n in range(rois.size(0)):
        b = int(rois[n, 0])
        x1, y1, x2, y2 = [float(v) * scale - 0.5 for v in rois[n, 1:]]
        rw, rh = x2 - x1, y2 - y1
        bw, bh = rw / pw_, rh / ph_
        gh = sr if sr > 0 else int(math.ceil(rh / ph_))
        gw = sr if sr > 0 else int(math.ceil(rw / pw_))
        for c in range(inp.size(1)):
            img = inp[b, c].tolist()
            img = torch.tensor(img, dtype=torch.float64)
            for ph in range(ph_):
                for pw in range(pw_):
                    sx, sy = x1, y1
                    if offset is not None:
                        sx += gamma * rw * float(offset[n, 0, ph, pw])
                        sy += gamma * rh * float(offset[n, 1, ph, pw])
                    acc = 0.0
                    for iy in range(gh):
                        y = sy + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sx + pw * bw + (ix + 0.5) * bw / gw
                            acc += float(_bilinear(img, y, x))
                    out[n, c, ph, pw] = acc / max(gh * gw, 1)
    return out


# ------------------------------------------------------------------------------ CARAFE
@pytest.mark.parametrize("k,g,s", [(3, 1, 2), (5, 2, 2), (3, 1, 1), (1, 1, 3), (3, 2, 3)])
def test_carafe_matches_naive_kernel(k, g, s):
    torch.manual_seed(k * 10 + g + s)
    f = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    m = torch.softmax(torch.randn(2, g, k * k, 3 * s, 4 * s, dtype=torch.float64), 2)
    m = m.reshape(2, g * k * k, 3 * s, 4 * s)
    torch.testing.assert_close(carafe_cpu(f, m, k, g, s), naive_carafe(f, m, k, g, s))
    torch.testing.assert_close(carafe(f, m, k, g, s), carafe_cpu(f, m, k, g, s))


def test_carafe_gradcheck():
    torch.manual_seed(0)
    f = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 9 * 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: carafe_cpu(a, b, 3, 2, 2), (f, m))


@pytest.mark.parametrize("h,w,k,s", [(5, 6, 3, 2), (4, 7, 5, 2), (6, 6, 3, 3)])
def test_carafe_down_matches_naive(h, w, k, s):
    torch.manual_seed(h + w + k)
    ho, wo = -(-h // s), -(-w // s)
    f = torch.randn(1, 4, h, w, dtype=torch.float64)
    m = torch.softmax(torch.randn(1, 2 * k * k, ho, wo, dtype=torch.float64), 1)
    torch.testing.assert_close(carafe_down_cpu(f, m, k, 2, s), naive_carafe_down(f, m, k, 2, s))


def test_carafe_down_gradcheck():
    torch.manual_seed(1)
    f = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 9, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: carafe_down_cpu(a, b, 3, 1, 2), (f, m))


def test_carafepack_type_carafe_runs_on_cpu():
    from mmdet.registry import MODELS

    import seesaw_lvis.models.ops.carafe as carafe_mod

    assert carafe_mod.is_installed()
    up = MODELS.build(dict(type='carafe', channels=8, scale_factor=2, up_kernel=5, up_group=1,
                           encoder_kernel=3, encoder_dilation=1, compressed_channels=4))
    from mmcv.ops.carafe import CARAFEPack

    assert type(up) is CARAFEPack  # mmcv's own class, patched method
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    y = up(x)
    assert y.shape == (2, 8, 10, 12)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert up.content_encoder.weight.grad is not None
    assert up.content_encoder.weight.grad.abs().sum() > 0
    # the mask head path in mmdet (name-special-cased 'carafe' upsample)
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    head = FCNMaskHead(num_convs=1, in_channels=8, conv_out_channels=8, num_classes=3,
                       upsample_cfg=dict(type='carafe', scale_factor=2, up_kernel=5,
                                         up_group=1, encoder_kernel=3, encoder_dilation=1,
                                         compressed_channels=4))
    assert head(torch.randn(3, 8, 7, 7)).shape == (3, 3, 14, 14)


# ------------------------------------------------------------------------------ DeformRoIPool
ROIS = torch.tensor([[0, 1.3, 2.2, 10.5, 11.1],
                     [1, -3.0, -2.0, 20.0, 15.0],   # partly outside the map
                     [0, 5.0, 5.0, 5.2, 5.3],       # tiny
                     [1, 0.0, 0.0, 40.0, 30.0]],    # larger than the map (at scale 1)
                    dtype=torch.float64)


@pytest.mark.parametrize("scale,sr", [(1.0, 0), (0.5, 0), (1.0, 2), (0.25, 1)])
def test_deform_roi_pool_zero_offset_is_roi_align_aligned(scale, sr):
    from seesaw_lvis.models.ops.deform_roi_pool import _mmcv_roi_align

    roi_align = _mmcv_roi_align()  # mmcv's own kernel, whatever the dispatcher would pick

    torch.manual_seed(0)
    x = torch.randn(2, 3, 13, 17)
    rois = ROIS.float()
    ours = deform_roi_pool_cpu(x, rois, None, (3, 4), scale, sr, 0.1)
    zero = deform_roi_pool_cpu(x, rois, torch.zeros(4, 2, 3, 4), (3, 4), scale, sr, 0.1)
    aligned = roi_align(x, rois, (3, 4), scale, sr, 'avg', True)
    torch.testing.assert_close(ours, aligned, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zero, aligned, atol=1e-5, rtol=1e-5)
    legacy = roi_align(x, rois, (3, 4), scale, sr, 'avg', False)
    assert (ours - legacy).abs().max() > 1e-2  # mmcv uses the aligned (-0.5) convention


@pytest.mark.parametrize("scale,sr,gamma", [(1.0, 0, 0.1), (0.5, 2, 0.3)])
def test_deform_roi_pool_offsets_match_naive(scale, sr, gamma):
    torch.manual_seed(3)
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64)
    off = torch.randn(4, 2, 2, 3, dtype=torch.float64)
    ours = deform_roi_pool_cpu(x, ROIS, off, (2, 3), scale, sr, gamma)
    ref = naive_deform_roi_pool(x, ROIS, off, (2, 3), scale, sr, gamma)
    torch.testing.assert_close(ours, ref)
    mod = DeformRoIPoolAnyDevice((2, 3), scale, sr, gamma)
    torch.testing.assert_close(mod(x, ROIS, off), ref)
    torch.testing.assert_close(deform_roi_pool(x, ROIS, off, (2, 3), scale, sr, gamma), ref)


def test_deform_roi_pool_gradcheck():
    torch.manual_seed(4)
    x = torch.randn(2, 2, 8, 9, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.1, 1.7, 6.3, 5.9], [1, 2.2, 0.9, 5.1, 6.4]], dtype=torch.float64)
    off = (0.2 * torch.randn(2, 2, 2, 2, dtype=torch.float64)).requires_grad_()
    for sr in (0, 2):
        assert torch.autograd.gradcheck(
            lambda a, o: deform_roi_pool_cpu(a, rois, o, 2, 1.0, sr, 0.1), (x, off))


def test_deform_roi_pool_edge_cases():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    empty = deform_roi_pool_cpu(x, torch.zeros(0, 5), torch.zeros(0, 2, 7, 7), 7)
    assert empty.shape == (0, 2, 7, 7)
    degenerate = torch.tensor([[0, 4.0, 4.0, 2.0, 2.0]])  # negative size: grid <= 0 -> 0
    assert deform_roi_pool_cpu(x, degenerate, None, 2).abs().sum() == 0
    out = deform_roi_pool_cpu(x, torch.tensor([[0, 0.5, 0.5, 4.0, 4.0]]), None, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_deform_roi_pool_csr_products_equal_the_dense_map():
    """Forward (CSR A @ X), input gradient (A^T as CSR) and offset gradient (dV/dx, dV/dy
    maps) equal the same products with the map as a dense matrix, over several images."""
    from seesaw_lvis.models.ops import deform_roi_pool as drp

    torch.manual_seed(5)
    x = torch.randn(2, 3, 10, 11, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.0, 8.0, 9.5], [1, 2.0, 2.0, 10.5, 7.0], [0, -2.0, 3.0, 4.0, 12.0]],
                        dtype=torch.float64)
    off = (0.3 * torch.randn(3, 2, 3, 3, dtype=torch.float64)).requires_grad_()
    out = deform_roi_pool_cpu(x, rois, off, 3, 1.0, 0, 0.1)
    g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    out.backward(g)
    pool_map, roi_w, roi_h = drp._sampling_maps(x.shape, rois, off.detach(), 3, 3, 1.0, 0, 0.1, True)
    dense = pool_map.matrix(pool_map.weight).to_dense()
    x_rows = drp._to_rows(x.detach())
    g_rows = g.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(drp._to_rows(out.detach()), dense @ x_rows)
    torch.testing.assert_close(drp._to_rows(x.grad), dense.t() @ g_rows)
    torch.testing.assert_close(pool_map.transposed().to_dense(), dense.t())
    dvx = ((pool_map.matrix(pool_map.dx).to_dense() @ x_rows) * g_rows).sum(1).view(3, 3, 3)
    torch.testing.assert_close(off.grad[:, 0], 0.1 * roi_w[:, None, None] * dvx)


def test_deform_roi_pool_degenerate_rois_have_zero_offset_gradient():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    off = torch.zeros(1, 2, 2, 2, requires_grad=True)
    out = deform_roi_pool_cpu(x, torch.tensor([[0, 4.0, 4.0, 2.0, 2.0]]), off, 2)
    out.sum().backward()
    assert out.abs().sum() == 0 and off.grad.abs().sum() == 0 and x.grad.abs().sum() == 0


def test_deform_roi_pool_non_finite_offsets_or_rois_give_nan_bins_not_a_crash():
    """An exploded offset or RoI (inf/NaN) must not become an out-of-range index: its bins are
    NaN (so the loss is, and training stops with its clear error), the other bins unchanged."""
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], [0, 2.0, 2.0, 7.0, 5.0], [0, 0.0, float("inf"), 3.0, 3.0]])
    off = torch.zeros(3, 2, 2, 2)
    off[0, 0, 1, 1] = float("inf")
    off[1, 1, 0, 0] = float("nan")
    off.requires_grad_()
    for sr in (0, 2):
        out = deform_roi_pool_cpu(x, rois, off, 2, 1.0, sr, 0.1)
        clean = deform_roi_pool_cpu(x, rois[:2], torch.zeros(2, 2, 2, 2), 2, 1.0, sr, 0.1)
        nan = torch.isnan(out)
        assert nan[0, :, 1, 1].all() and nan[1, :, 0, 0].all() and nan[2].all()
        assert nan.sum() == 2 * (1 + 1 + 4)
        torch.testing.assert_close(out[0, :, 0, 0], clean[0, :, 0, 0])
        out.nansum().backward()  # no crash in backward either


# ------------------------------------------------------------------------------ RoIAlign dispatch
@pytest.fixture
def roi_spy(monkeypatch):
    from seesaw_lvis.models.ops import deform_roi_pool as pool_mod

    calls = []
    real = pool_mod.deform_roi_pool_cpu

    def counting(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(pool_mod, "deform_roi_pool_cpu", counting)
    return calls


@pytest.mark.parametrize("out,scale,sr", [(7, 0.25, 0), (14, 0.125, 2)])
def test_roi_align_layer_trains_through_the_pooling_map_with_mmcv_values(roi_spy, out, scale, sr):
    from mmcv.ops import RoIAlign

    from seesaw_lvis.bench.ops import random_rois
    from seesaw_lvis.models.ops import deform_roi_pool as pool_mod

    assert pool_mod.is_installed()
    layer = RoIAlign(out, scale, sr)  # mmcv's own class, as mmdet's RoI extractors build it
    x = torch.randn(2, 5, 16, 24, requires_grad=True)
    rois = torch.cat([random_rois(x.shape, round(1 / scale), 20, torch.Generator().manual_seed(0)),
                      ROIS.float()])
    y = layer(x, rois)
    assert roi_spy == [(2, 5, 16, 24)]
    g = torch.randn(y.shape)
    (y * g).sum().backward()
    ours_grad, x.grad = x.grad.clone(), None
    mmcv_fn = pool_mod._mmcv_roi_align()
    assert mmcv_fn is not pool_mod.roi_align
    ref = mmcv_fn(x, rois, (out, out), scale, sr, "avg", True)
    (ref * g).sum().backward()
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_grad, x.grad, atol=1e-5, rtol=1e-5)


def test_roi_align_keeps_mmcv_kernel_without_gradients_and_for_other_modes(roi_spy, monkeypatch):
    from seesaw_lvis.models.ops import deform_roi_pool as pool_mod

    seen = []
    real = pool_mod._mmcv_roi_align()
    monkeypatch.setattr(pool_mod, "_mmcv_roi_align",
                        lambda: (lambda *a: seen.append(a[5:]) or real(*a)))
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]])
    with torch.no_grad():  # evaluation
        pool_mod.roi_align(x, rois, 2, 1.0, 0)
    pool_mod.roi_align(x.detach(), rois, 2, 1.0, 0)  # no graph to build
    pool_mod.roi_align(x, rois, 2, 1.0, 0, "max", True)  # mmcv's max mode
    pool_mod.roi_align(x, rois, 2, 1.0, 0, "avg", False)  # the legacy (unaligned) convention
    assert seen == [("avg", True), ("avg", True), ("max", True), ("avg", False)] and roi_spy == []
    # a RoI of negative or NaN size, which mmcv's aligned kernel refuses: left to it, so a
    # training pass fails on it as an evaluation does
    for bad in ([[0, 6.0, 1.0, 1.0, 7.0]], [[0, 1.0, 1.0, 6.0, float("nan")]]):
        with pytest.raises(RuntimeError, match="non-negative size"):
            pool_mod.roi_align(x, torch.tensor(bad), 2, 1.0, 0)
    # half precision (mmcv's CPU kernel takes it; our CSR product need not), a traced pass
    pool_mod.roi_align(x.detach().half().requires_grad_(), rois.half(), 2, 1.0, 0)
    torch.jit.trace(lambda t: pool_mod.roi_align(t, rois, 2, 1.0, 0), (x,), check_trace=False)
    assert len(seen) == 4 + 2 + 1 + 1 and roi_spy == []
    pool_mod.roi_align(x, rois, 2, 1.0, 0)  # and the same call, plain, takes the map
    assert len(seen) == 8 and len(roi_spy) == 1
    meta = torch.empty(1, 3, 8, 8, device="meta", requires_grad=True)
    monkeypatch.setattr(pool_mod, "_mmcv_roi_align", lambda: (lambda *a: seen.append(a[0].device.type)))
    pool_mod.roi_align(meta, rois.to("meta"), 2)  # any other device: mmcv's kernels
    assert seen[-1] == "meta" and len(roi_spy) == 1


def test_mmdet_roi_extractor_training_pass_uses_the_pooling_map(roi_spy):
    from mmdet.registry import MODELS

    extractor = MODELS.build(dict(type="SingleRoIExtractor", out_channels=4, featmap_strides=[4, 8],
                                  roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0)))
    feats = [torch.randn(2, 4, 16, 16, requires_grad=True), torch.randn(2, 4, 8, 8, requires_grad=True)]
    # mmdet maps RoIs under 112 px (sqrt of the area) to the stride-4 level, larger to stride 8
    rois = torch.tensor([[0, 2.0, 2.0, 30.0, 30.0], [1, 0.0, 0.0, 120.0, 120.0], [1, 4.0, 8.0, 20.0, 18.0]])
    extractor(feats, rois).sum().backward()
    assert len(roi_spy) == 2 and feats[0].grad is not None and feats[1].grad is not None


def test_roi_align_uninstall_restores_mmcv_and_install_is_idempotent():
    import sys

    import mmcv.ops

    from seesaw_lvis.models.ops import deform_roi_pool as pool_mod

    module = sys.modules["mmcv.ops.roi_align"]
    try:
        pool_mod.install()  # second call: no-op
        assert pool_mod.is_installed() and mmcv.ops.roi_align is pool_mod.roi_align
        pool_mod.uninstall()
        assert not pool_mod.is_installed()
        # (a classmethod: each ``Function.apply`` access is a new bound method, so ==, not is)
        assert module.roi_align == module.RoIAlignFunction.apply
        assert mmcv.ops.roi_align == module.RoIAlignFunction.apply
    finally:
        pool_mod.install()
    assert pool_mod.is_installed() and mmcv.ops.roi_align is pool_mod.roi_align


def test_carafe_uninstall_restores_mmcv_and_install_is_idempotent():
    from mmcv.ops.carafe import CARAFEPack

    from seesaw_lvis.models.ops import carafe as carafe_mod

    mmcv_method = carafe_mod._PATCH.original()
    assert mmcv_method is not carafe_mod._feature_reassemble  # mmcv's, not ours
    try:
        carafe_mod.install()  # second call: no-op
        assert carafe_mod.is_installed() and carafe_mod._PATCH.original() is mmcv_method
        carafe_mod.uninstall()
        assert not carafe_mod.is_installed() and CARAFEPack.feature_reassemble is mmcv_method
    finally:
        carafe_mod.install()
    assert CARAFEPack.feature_reassemble is carafe_mod._feature_reassemble


def test_mmcv_patch_replaces_keeps_and_restores_one_attribute():
    import types

    import mmcv.ops

    from seesaw_lvis.models.ops.patch import MmcvPatch

    def theirs():
        return "theirs"

    def ours():
        return "ours"

    owner = types.SimpleNamespace(op=theirs)
    patch = MmcvPatch(lambda: owner, "op", ours)
    assert not patch.is_installed() and patch.original() is theirs
    patch.install()
    patch.install()  # idempotent: mmcv's original is not overwritten by ours
    assert owner.op is ours and patch.is_installed() and patch.original() is theirs
    assert not hasattr(mmcv.ops, "op")  # not re-exported: mmcv.ops untouched
    patch.uninstall()
    assert owner.op is theirs and not patch.is_installed() and patch.original() is theirs
    patch.uninstall()  # nothing installed: no-op
    assert owner.op is theirs

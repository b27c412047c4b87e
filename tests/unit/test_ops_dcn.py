"""CPU DCNv2 (modulated deformable conv) against mmcv's own CPU kernel, and its install."""
from __future__ import annotations

import pytest
import torch
from mmcv.ops.modulated_deform_conv import (ModulatedDeformConv2d, ModulatedDeformConv2dFunction,
                                            ModulatedDeformConv2dPack)

import seesaw_lvis.models.ops  # noqa: F401  (installs the patch)
import seesaw_lvis.models.ops.modulated_deform_conv as dcn_mod
from seesaw_lvis.models.ops import modulated_deform_conv2d_cpu

# mmcv's op itself (the autograd Function is never patched, only the module-level name)
mmcv_dcn = ModulatedDeformConv2dFunction.apply


def _out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _inputs(n, c, h, w, c_out, kh, kw, s, p, d, g, dg, bias, dtype, seed, offset_fn=None):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = _out_size(h, kh, s, p, d), _out_size(w, kw, s, p, d)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    if offset_fn is None:  # a few pixels: many points fall outside the image
        off = 3.0 * torch.randn(n, dg * 2 * kh * kw, ho, wo, generator=gen, dtype=dtype)
    else:
        off = offset_fn(gen, (n, dg * 2 * kh * kw, ho, wo)).to(dtype)
    m = torch.rand(n, dg * kh * kw, ho, wo, generator=gen, dtype=dtype)
    wt = torch.randn(c_out, c // g, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(c_out, generator=gen, dtype=dtype) if bias else None
    grad = torch.randn(n, c_out, ho, wo, generator=gen, dtype=dtype)
    return (x, off, m, wt, b), grad


def _fwd_bwd(fn, tensors, grad, s, p, d, g, dg):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(*leaves, s, p, d, g, dg)
    out.backward(grad)
    return [out] + [t.grad for t in leaves if t is not None]


def _assert_close_rel(ours, ref, rel):
    ours, ref = [t.detach() for t in ours], [t.detach() for t in ref]
    for name, a, b in zip(["out", "grad_input", "grad_offset", "grad_mask", "grad_weight",
                           "grad_bias"], ours, ref):
        assert a.shape == b.shape, name
        scale = max(float(b.abs().max()), 1e-12)
        err = float((a - b).abs().max())
        assert err <= rel * scale, f"{name}: max abs diff {err:.3g} vs max|ref| {scale:.3g}"


# n, c, h, w, c_out, kh, kw, stride, padding, dilation, groups, deform_groups, bias
CASES = {
    "s1_p1_bias": (2, 6, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, True),
    "s2_p1_nobias": (2, 6, 9, 11, 5, 3, 3, 2, 1, 1, 1, 1, False),
    "dil2_p2": (1, 6, 10, 7, 4, 3, 3, 1, 2, 2, 1, 1, True),
    "groups2": (2, 8, 9, 8, 6, 3, 3, 1, 1, 1, 2, 1, True),
    "deform_groups2": (2, 8, 8, 9, 6, 3, 3, 1, 1, 1, 1, 2, True),
    "g2_dg2_s2_nonsquare": (2, 8, 12, 7, 6, 3, 3, 2, 1, 1, 2, 2, False),
    "g2_dg4_p0": (1, 8, 7, 9, 4, 3, 3, 1, 0, 1, 2, 4, True),
    "kernel_3x2": (1, 4, 7, 6, 4, 3, 2, 1, 1, 1, 1, 1, True),
    "kernel_1x1": (2, 4, 6, 5, 3, 1, 1, 1, 0, 1, 1, 1, True),
}


# (case, dtype, seed, relative tolerance): every case in float64, two in float32
PRECISIONS = [(case, torch.float64, 0, 1e-10) for case in CASES] + [
    (case, torch.float32, 1, 1e-4) for case in ("s1_p1_bias", "g2_dg2_s2_nonsquare")]


@pytest.mark.parametrize("case,dtype,seed,rel", PRECISIONS)
def test_matches_mmcv_cpu_kernel(case, dtype, seed, rel):
    n, c, h, w, co, kh, kw, s, p, d, g, dg, bias = CASES[case]
    tensors, grad = _inputs(n, c, h, w, co, kh, kw, s, p, d, g, dg, bias, dtype, seed)
    ref = _fwd_bwd(mmcv_dcn, tensors, grad, s, p, d, g, dg)
    ours = _fwd_bwd(modulated_deform_conv2d_cpu, tensors, grad, s, p, d, g, dg)
    _assert_close_rel(ours, ref, rel)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["zero", "half_pixel_lattice"])
def test_integer_and_border_coordinates(kind, dtype):
    """Zero offsets (DCNv2's init) put samples exactly on pixels and, with padding, exactly on
    h = -1 / h = H (mmcv's '<= -1 / >= H -> 0' border): offset gradients there are one-sided,
    so they must follow mmcv's floor / border rules exactly, not just approximately."""
    if kind == "zero":
        def offset_fn(gen, shape):
            return torch.zeros(shape)
    else:
        def offset_fn(gen, shape):
            return 0.5 * torch.randint(-4, 5, shape, generator=gen).float()
    for case in ("s1_p1_bias", "g2_dg2_s2_nonsquare", "dil2_p2"):
        n, c, h, w, co, kh, kw, s, p, d, g, dg, bias = CASES[case]
        tensors, grad = _inputs(n, c, h, w, co, kh, kw, s, p, d, g, dg, bias, dtype, 2,
                                offset_fn)
        ref = _fwd_bwd(mmcv_dcn, tensors, grad, s, p, d, g, dg)
        ours = _fwd_bwd(modulated_deform_conv2d_cpu, tensors, grad, s, p, d, g, dg)
        _assert_close_rel(ours, ref, 1e-10 if dtype == torch.float64 else 1e-5)


def test_dtype_follows_offset_like_mmcv():
    (x, off, m, wt, b), _ = _inputs(1, 4, 5, 6, 3, 3, 3, 1, 1, 1, 1, 1, True, torch.float32, 3)
    off = off.double()
    ours = modulated_deform_conv2d_cpu(x, off, m, wt, b, 1, 1, 1, 1, 1)
    ref = mmcv_dcn(x, off, m, wt, b, 1, 1, 1, 1, 1)
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref)


def test_shape_errors():
    x = torch.randn(1, 4, 5, 5)
    wt = torch.randn(3, 4, 3, 3)
    off, m = torch.zeros(1, 18, 5, 5), torch.ones(1, 9, 5, 5)
    with pytest.raises(ValueError, match="4D"):
        modulated_deform_conv2d_cpu(x[0], off, m, wt, None, 1, 1)
    with pytest.raises(ValueError, match="offset shape"):
        modulated_deform_conv2d_cpu(x, off[:, :9], m, wt, None, 1, 1)
    with pytest.raises(ValueError, match="channels"):
        modulated_deform_conv2d_cpu(x, off, m, wt, None, 1, 1, groups=2)
    with pytest.raises(ValueError, match="too small"):
        modulated_deform_conv2d_cpu(x[..., :1, :1], off, m, wt, None, 1, 0)


# ------------------------------------------------------------------------------ install / dispatch
@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = dcn_mod.modulated_deform_conv2d_cpu

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(dcn_mod, "modulated_deform_conv2d_cpu", counting)
    return calls


def _randomise_offsets(layer, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # mmcv inits conv_offset to zero; make offsets/masks non-trivial
        layer.conv_offset.weight.copy_(0.3 * torch.randn(layer.conv_offset.weight.shape,
                                                         generator=gen))
        layer.conv_offset.bias.copy_(torch.randn(layer.conv_offset.bias.shape, generator=gen))


def _pack_reference(layer, x):
    """What mmcv's ModulatedDeformConv2dPack.forward computes, with mmcv's kernel."""
    out = layer.conv_offset(x)
    o1, o2, mask = torch.chunk(out, 3, dim=1)
    return mmcv_dcn(x, torch.cat((o1, o2), 1), torch.sigmoid(mask), layer.weight, layer.bias,
                    layer.stride, layer.padding, layer.dilation, layer.groups,
                    layer.deform_groups)


def test_build_conv_layer_dcnv2_uses_cpu_implementation(spy):
    from mmcv.cnn import build_conv_layer

    assert dcn_mod.is_installed()
    layer = build_conv_layer(dict(type='DCNv2', deform_groups=2), 8, 6, kernel_size=3,
                             stride=2, padding=1, groups=2, bias=True)
    assert type(layer) is ModulatedDeformConv2dPack  # mmcv's own class, configs unchanged
    _randomise_offsets(layer, 0)
    x = torch.randn(2, 8, 11, 9, requires_grad=True)
    out = layer(x)
    assert len(spy) == 1
    out.square().sum().backward()
    ours_grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    ref = _pack_reference(layer, x)
    ref.square().sum().backward()
    ref_grads = [x.grad] + [p.grad for p in layer.parameters()]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    # the plain (non-Pack) module and mmcv.ops' re-export go through the dispatcher too
    plain = ModulatedDeformConv2d(8, 4, 3, padding=1)
    plain(x, torch.zeros(2, 18, 11, 9), torch.ones(2, 9, 11, 9))
    import mmcv.ops

    assert mmcv.ops.modulated_deform_conv2d is dcn_mod.modulated_deform_conv2d
    assert len(spy) == 2


def test_mmdet_resnest_dcn_block_uses_cpu_implementation(spy):
    from mmdet.models.backbones.resnest import Bottleneck

    block = Bottleneck(inplanes=16, planes=4, groups=1, base_width=4, base_channels=4, radix=2,
                       dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False))
    assert type(block.conv2.conv) is ModulatedDeformConv2dPack
    assert block.conv2.conv.groups == 2  # ResNeSt's split-attention conv: groups * radix
    block.eval()
    y = block(torch.randn(1, 16, 8, 8))
    assert y.shape == (1, 16, 8, 8)
    assert len(spy) == 1


def test_non_cpu_tensors_go_to_mmcv(monkeypatch, spy):
    seen = []
    monkeypatch.setattr(dcn_mod, "mmcv_modulated_deform_conv2d",
                        lambda *args: seen.append(args[0].device.type) or args[0])
    x = torch.empty(1, 4, 5, 5, device="meta")
    dcn_mod.modulated_deform_conv2d(x, x, x, x, None, 1, 1, 1, 1, 1)
    assert seen == ["meta"] and spy == []


def test_uninstall_restores_mmcv_and_install_is_idempotent():
    import mmcv.ops
    import mmcv.ops.modulated_deform_conv as mdc

    try:
        dcn_mod.install()  # second call: no-op
        dcn_mod.uninstall()
        assert not dcn_mod.is_installed()
        # (a classmethod: each ``Function.apply`` access is a new bound method, so ==, not is)
        assert mdc.modulated_deform_conv2d == mmcv_dcn
        assert mmcv.ops.modulated_deform_conv2d == mmcv_dcn
    finally:
        dcn_mod.install()
    assert dcn_mod.is_installed()
    assert mmcv.ops.modulated_deform_conv2d is dcn_mod.modulated_deform_conv2d

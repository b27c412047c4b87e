#!/usr/bin/env python
"""Compare our plain-PyTorch CARAFE, deformable RoI pooling and DCNv2 with mmcv's CUDA kernels.

Run on a CUDA machine with mmcv 2.1 built with CUDA ops::

    python scripts/gpu_check_ops.py [--tol 1e-4] [--seed 0] [--out report.json]

For random inputs of several shapes it runs forward and backward of
``seesaw_lvis.models.ops.carafe.carafe_cpu`` / ``...deform_roi_pool.deform_roi_pool_cpu`` /
``...modulated_deform_conv.modulated_deform_conv2d_cpu`` (on CPU, float64 and float32) and of
``mmcv.ops.carafe`` / ``mmcv.ops.deform_roi_pool`` / mmcv's ``ModulatedDeformConv2dFunction``
(on CUDA, float32) with the same inputs and upstream gradient, and reports the max absolute
and max relative differences of the outputs and of the gradients w.r.t. features/masks
(CARAFE), input/offset (DeformRoIPool) and input/offset/mask/weight/bias (DCNv2). For DCNv2
it also checks that the installed dispatcher (what ``type='DCNv2'`` layers call) gives
mmcv's CUDA result on CUDA tensors (``dispatch_cuda``: expected 0, the same kernel runs).
Prints a JSON summary; exit code 1 if any max absolute difference exceeds ``--tol``
(default 1e-4; with ``--scale-tol`` the bound is ``tol * max(1, max|reference|)``; relative
differences are reported, not gated: they blow up where the reference is ~0), 2 if CUDA is
not available.

Notes: the CUDA kernels use float atomics, so backward results carry float32 rounding
noise; inputs are O(1) and RoIs are kept inside the map by default, plus one case with RoIs
crossing the border (there the offset gradient follows mmcv's formula, which our
implementation reproduces). DCNv2 cases use offsets of a few pixels (many samples outside the
map) and zero offsets (samples exactly on pixels and on the h = -1 / h = H border, where the
offset gradient is one-sided and must follow mmcv's floor/border rules).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def _diff(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    ours = ours.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if ours.shape != ref.shape:
        return {"shape_mismatch": [list(ours.shape), list(ref.shape)], "max_abs": float("inf"),
                "max_rel": float("inf")}
    if ours.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    abs_d = (ours - ref).abs()
    rel = abs_d / ref.abs().clamp(min=1e-6)
    return {"max_abs": float(abs_d.max()), "max_rel": float(rel.max()),
            "ref_max_abs": float(ref.abs().max())}


def check_carafe(shapes, seed: int, cpu_dtype: torch.dtype) -> list[dict]:
    from mmcv.ops import carafe as mmcv_carafe

    from seesaw_lvis.models.ops.carafe import carafe_cpu

    results = []
    for n, c, h, w, k, g, s in shapes:
        gen = torch.Generator().manual_seed(seed + n * 7 + c + h + w + k + g + s)
        f = torch.randn(n, c, h, w, generator=gen)
        m = torch.randn(n, g, k * k, h * s, w * s, generator=gen).softmax(2)
        m = m.reshape(n, g * k * k, h * s, w * s).contiguous()
        grad = torch.randn(n, c, h * s, w * s, generator=gen)

        fc, mc = f.cuda().requires_grad_(), m.cuda().requires_grad_()
        out_ref = mmcv_carafe(fc, mc, k, g, s)
        out_ref.backward(grad.cuda())

        fo = f.to(cpu_dtype).clone().requires_grad_()
        mo = m.to(cpu_dtype).clone().requires_grad_()
        out = carafe_cpu(fo, mo, k, g, s)
        out.backward(grad.to(cpu_dtype))
        results.append({
            "op": "carafe", "shape": dict(n=n, c=c, h=h, w=w, kernel=k, group=g, scale=s),
            "cpu_dtype": str(cpu_dtype).replace("torch.", ""),
            "forward": _diff(out, out_ref),
            "grad_features": _diff(fo.grad, fc.grad),
            "grad_masks": _diff(mo.grad, mc.grad),
        })
    return results


def _random_rois(gen, num, batch, height, width, spatial_scale, inside: bool):
    img_h, img_w = height / spatial_scale, width / spatial_scale
    if inside:
        x1 = torch.rand(num, generator=gen) * img_w * 0.6 + img_w * 0.05
        y1 = torch.rand(num, generator=gen) * img_h * 0.6 + img_h * 0.05
        bw = torch.rand(num, generator=gen) * (img_w * 0.95 - x1) * 0.9 + 1.0 / spatial_scale
        bh = torch.rand(num, generator=gen) * (img_h * 0.95 - y1) * 0.9 + 1.0 / spatial_scale
    else:
        x1 = torch.rand(num, generator=gen) * img_w * 1.2 - img_w * 0.2
        y1 = torch.rand(num, generator=gen) * img_h * 1.2 - img_h * 0.2
        bw = torch.rand(num, generator=gen) * img_w * 0.8 + 1.0
        bh = torch.rand(num, generator=gen) * img_h * 0.8 + 1.0
    b = torch.randint(0, batch, (num, ), generator=gen).float()
    return torch.stack([b, x1, y1, x1 + bw, y1 + bh], 1)


def check_deform_roi_pool(cases, seed: int, cpu_dtype: torch.dtype) -> list[dict]:
    from mmcv.ops import deform_roi_pool as mmcv_pool

    from seesaw_lvis.models.ops.deform_roi_pool import deform_roi_pool_cpu

    results = []
    for i, (b, c, h, w, k, out, scale, sr, gamma, inside) in enumerate(cases):
        gen = torch.Generator().manual_seed(seed + 1000 + i)
        x = torch.randn(b, c, h, w, generator=gen)
        rois = _random_rois(gen, k, b, h, w, scale, inside)
        off = 0.3 * torch.randn(k, 2, out, out, generator=gen)
        grad = torch.randn(k, c, out, out, generator=gen)

        xc, oc = x.cuda().requires_grad_(), off.cuda().requires_grad_()
        ref = mmcv_pool(xc, rois.cuda(), oc, (out, out), scale, sr, gamma)
        ref.backward(grad.cuda())

        xo = x.to(cpu_dtype).clone().requires_grad_()
        oo = off.to(cpu_dtype).clone().requires_grad_()
        ours = deform_roi_pool_cpu(xo, rois.to(cpu_dtype), oo, (out, out), scale, sr, gamma)
        ours.backward(grad.to(cpu_dtype))
        results.append({
            "op": "deform_roi_pool",
            "shape": dict(batch=b, c=c, h=h, w=w, rois=k, out=out, spatial_scale=scale,
                          sampling_ratio=sr, gamma=gamma, rois_inside=inside),
            "cpu_dtype": str(cpu_dtype).replace("torch.", ""),
            "forward": _diff(ours, ref),
            "grad_input": _diff(xo.grad, xc.grad),
            "grad_offset": _diff(oo.grad, oc.grad),
        })
        # offset=None path (plain aligned RoIAlign)
        ref0 = mmcv_pool(x.cuda(), rois.cuda(), None, (out, out), scale, sr, gamma)
        ours0 = deform_roi_pool_cpu(x.to(cpu_dtype), rois.to(cpu_dtype), None, (out, out),
                                    scale, sr, gamma)
        results[-1]["forward_no_offset"] = _diff(ours0, ref0)
    return results


def check_dcnv2(cases, seed: int, cpu_dtype: torch.dtype) -> list[dict]:
    import mmcv.ops.modulated_deform_conv as mdc

    from seesaw_lvis.models.ops.modulated_deform_conv import (modulated_deform_conv2d,
                                                              modulated_deform_conv2d_cpu)

    mmcv_fn = mdc.ModulatedDeformConv2dFunction.apply  # mmcv's op itself (never patched)
    results = []
    for i, (n, c, h, w, co, k, s, p, d, g, dg, bias, off_scale) in enumerate(cases):
        gen = torch.Generator().manual_seed(seed + 2000 + i)
        ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
        wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
        x = torch.randn(n, c, h, w, generator=gen)
        off = off_scale * torch.randn(n, dg * 2 * k * k, ho, wo, generator=gen)
        # multiples of 2**-10: sample coordinates are then exact in float32 and float64 alike
        # (else a float32 rounding onto an integer could flip a floor and the one-sided
        # offset gradient between the float64 CPU run and the float32 CUDA one)
        off = torch.round(off * 1024) / 1024
        m = torch.rand(n, dg * k * k, ho, wo, generator=gen)
        wt = torch.randn(co, c // g, k, k, generator=gen) / (c // g * k * k) ** 0.5
        b = torch.randn(co, generator=gen) if bias else None
        grad = torch.randn(n, co, ho, wo, generator=gen)
        args = (s, p, d, g, dg)

        ref_in = [t.cuda().requires_grad_() if t is not None else None
                  for t in (x, off, m, wt, b)]
        ref = mmcv_fn(*ref_in, *args)
        ref.backward(grad.cuda())
        with torch.no_grad():
            disp = modulated_deform_conv2d(*[t.cuda() if t is not None else None
                                             for t in (x, off, m, wt, b)], *args)

        ours_in = [t.to(cpu_dtype).clone().requires_grad_() if t is not None else None
                   for t in (x, off, m, wt, b)]
        ours = modulated_deform_conv2d_cpu(*ours_in, *args)
        ours.backward(grad.to(cpu_dtype))
        r = {
            "op": "dcnv2",
            "shape": dict(n=n, c=c, h=h, w=w, c_out=co, kernel=k, stride=s, padding=p,
                          dilation=d, groups=g, deform_groups=dg, bias=bias,
                          offset_scale=off_scale),
            "cpu_dtype": str(cpu_dtype).replace("torch.", ""),
            "forward": _diff(ours, ref),
            "dispatch_cuda": _diff(disp, ref),
        }
        for name, a, bb in zip(("grad_input", "grad_offset", "grad_mask", "grad_weight",
                                "grad_bias"), ours_in, ref_in):
            if a is not None:
                r[name] = _diff(a.grad, bb.grad)
        results.append(r)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    ap.add_argument("--scale-tol", action="store_true",
                    help="gate on max_abs <= tol * max(1, max|reference|) instead of tol "
                         "(offset gradients reach O(10-100); float32 atomics then give ~1e-5)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA not available"}))
        return 2

    carafe_shapes = [  # n, c, h, w, kernel, group, scale
        (1, 4, 5, 7, 3, 1, 2),
        (2, 16, 14, 14, 5, 1, 2),   # mask-head-like
        (2, 32, 9, 11, 5, 4, 2),
        (1, 8, 6, 6, 3, 2, 3),
        (1, 8, 8, 8, 1, 1, 2),
    ]
    pool_cases = [  # batch, c, h, w, rois, out, spatial_scale, sampling_ratio, gamma, inside
        (1, 4, 16, 16, 5, 3, 1.0, 0, 0.1, True),
        (2, 16, 32, 40, 20, 7, 0.25, 0, 0.1, True),
        (2, 8, 25, 19, 12, 7, 0.125, 2, 0.1, True),
        (1, 8, 20, 20, 10, 7, 0.5, 0, 0.3, False),
    ]
    dcn_cases = [  # n, c, h, w, c_out, kernel, stride, pad, dil, groups, deform_groups, bias,
        #            offset scale (pixels; 0 = samples on pixels and on the border)
        (2, 16, 17, 13, 8, 3, 1, 1, 1, 1, 1, True, 2.0),
        (2, 16, 17, 13, 8, 3, 2, 1, 1, 1, 1, False, 2.0),
        (1, 16, 12, 12, 8, 3, 1, 2, 2, 1, 1, True, 3.0),
        (2, 32, 16, 20, 32, 3, 1, 1, 1, 2, 1, False, 2.0),   # ResNeSt: groups = radix = 2
        (2, 16, 15, 15, 8, 3, 2, 1, 1, 2, 2, True, 2.0),
        (2, 64, 32, 32, 64, 3, 1, 1, 1, 1, 1, True, 0.0),
        (1, 8, 9, 11, 4, 1, 1, 0, 1, 1, 1, True, 1.0),
    ]
    results = []
    for dtype in (torch.float64, torch.float32):
        results += check_carafe(carafe_shapes, args.seed, dtype)
        results += check_deform_roi_pool(pool_cases, args.seed, dtype)
        results += check_dcnv2(dcn_cases, args.seed, dtype)

    worst = 0.0
    failures = []
    for r in results:
        for key, val in r.items():
            if isinstance(val, dict) and "max_abs" in val:
                worst = max(worst, val["max_abs"])
                tol = args.tol * (max(1.0, val.get("ref_max_abs", 1.0)) if args.scale_tol else 1.0)
                if not val["max_abs"] <= tol:
                    failures.append({"op": r["op"], "shape": r["shape"],
                                     "cpu_dtype": r["cpu_dtype"], "what": key, **val})
    summary = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "tol": args.tol,
        "worst_max_abs": worst,
        "passed": not failures,
        "failures": failures,
        "results": results,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

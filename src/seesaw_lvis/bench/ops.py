"""Our CPU ops against mmcv 2.1's own CPU kernels, side by side on the shapes ``mini`` runs.

Where mmcv has a CPU kernel and we route CPU tensors elsewhere (``seesaw_lvis.models.ops``),
this is the measurement behind it, one case per shape:

* ``roi_align``: mmcv's ``roi_align`` (aligned, avg) against our pooling map
  (``deform_roi_pool_cpu`` with no offset). ``train`` cases time forward + backward on the
  RoI feature maps of one Table 1 training iteration at ``mini`` (2 images of 213 x 128,
  64 channels: box RoIs 7 x 7 on the stride-4 and stride-8 levels, mask RoIs 14 x 14);
  ``eval`` cases the forward alone, for one image, without a graph (neither wins on every
  shape there, so the dispatcher leaves evaluation to mmcv's kernel).
* ``dcnv2``: mmcv's ``ModulatedDeformConv2dFunction`` against ``modulated_deform_conv2d_cpu``,
  forward + backward, on a ResNeSt-50 (``mini``: base width 32) stage-2 split-attention conv.

CARAFE is not here: mmcv 2.1 has no CPU kernel for it. Each case checks that both give the
same values (and input gradients), then times them interleaved (``time_interleaved``); the
JSON has their medians and ``ratio_mmcv_over_ours``.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from seesaw_lvis.bench import device_name, time_interleaved
from seesaw_lvis.io import write_json

__all__ = ["run", "CASES", "random_rois"]

# (name, kind, shape of the feature map (B, C, H, W), stride, output size, number of RoIs)
ROI_CASES = (
    ("train_box_stride4", "train", (2, 64, 32, 56), 4, 7, 128),
    ("train_box_stride8", "train", (2, 64, 16, 28), 8, 7, 32),
    ("train_mask_stride4", "train", (2, 64, 32, 56), 4, 14, 24),
    ("eval_box_stride4", "eval", (1, 64, 32, 56), 4, 7, 100),
    ("eval_mask_stride4", "eval", (1, 64, 32, 56), 4, 14, 50),
)
# (name, input (B, C, H, W), output channels, groups, deform groups)
DCN_CASES = (("train_resnest50_stage2", (2, 64, 16, 28), 64, 2, 1),)
CASES = tuple(c[0] for c in ROI_CASES) + tuple(c[0] for c in DCN_CASES)


def random_rois(shape, stride: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` RoIs over the image a ``stride`` map of ``shape`` covers, 2 px to 30% of it."""
    bsz, _, h, w = shape
    size = torch.tensor([w * stride, h * stride], dtype=torch.float32)
    xy = torch.rand(n, 2, generator=gen) * size * 0.7
    wh = torch.rand(n, 2, generator=gen) * size * 0.3 + 2
    batch = torch.randint(0, bsz, (n, 1), generator=gen).float()
    return torch.cat([batch, xy, xy + wh], 1)


def _roi_case(kind: str, shape, stride: int, out: int, n: int,
              gen: torch.Generator) -> Dict[str, object]:
    from seesaw_lvis.models.ops.deform_roi_pool import _mmcv_roi_align, deform_roi_pool_cpu

    mmcv_fn = _mmcv_roi_align()
    x = torch.randn(shape, generator=gen, requires_grad=kind == "train")
    rois = random_rois(shape, stride, n, gen)
    fns = {"mmcv": lambda: mmcv_fn(x, rois, (out, out), 1.0 / stride, 0, "avg", True),
           "ours": lambda: deform_roi_pool_cpu(x, rois, None, out, 1.0 / stride, 0)}
    return _calls(fns, x, kind == "train", gen)


def _dcn_case(shape, out_ch: int, groups: int, deform_groups: int,
              gen: torch.Generator) -> Dict[str, object]:
    from mmcv.ops.modulated_deform_conv import ModulatedDeformConv2dFunction

    from seesaw_lvis.models.ops.modulated_deform_conv import modulated_deform_conv2d_cpu

    bsz, ch, h, w = shape
    x = torch.randn(shape, generator=gen, requires_grad=True)
    offset = torch.randn(bsz, deform_groups * 18, h, w, generator=gen)
    mask = torch.rand(bsz, deform_groups * 9, h, w, generator=gen)
    weight = (torch.randn(out_ch, ch // groups, 3, 3, generator=gen) * 0.1).requires_grad_()
    args = (offset, mask, weight, None, 1, 1, 1, groups, deform_groups)
    fns = {"mmcv": lambda: ModulatedDeformConv2dFunction.apply(x, *args),
           "ours": lambda: modulated_deform_conv2d_cpu(x, *args)}
    return _calls(fns, x, True, gen)


def _calls(fns: Dict[str, Callable], x: torch.Tensor, backward: bool,
           gen: torch.Generator) -> Dict[str, object]:
    """The timed calls (forward, + backward of a fixed random projection when ``backward``)
    and the largest differences between the two on output and input gradient."""
    outs, grads = {}, {}
    with torch.set_grad_enabled(backward):
        for name, fn in fns.items():
            outs[name] = fn()
    proj = torch.randn(outs["mmcv"].shape, generator=gen)
    if backward:
        for name in fns:
            x.grad = None
            (outs[name] * proj).sum().backward()
            grads[name] = x.grad.clone()

    def timed(fn):
        if not backward:
            return fn  # _measure runs it under no_grad

        def fwd_bwd():
            x.grad = None
            (fn() * proj).sum().backward()
        return fwd_bwd

    agreement = {"max_abs_diff_out": float((outs["mmcv"] - outs["ours"]).detach().abs().max())}
    if backward:
        agreement["max_abs_diff_input_grad"] = float((grads["mmcv"] - grads["ours"]).abs().max())
    return {"calls": {name: timed(fn) for name, fn in fns.items()}, "agreement": agreement,
            "no_grad": not backward}


def _measure(case: Dict[str, object], repeats: int, warmup: int) -> dict:
    with torch.set_grad_enabled(not case["no_grad"]):
        times = time_interleaved(case["calls"], repeats, warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_ms": {k: round(v * 1e3, 4) for k, v in med.items()},
            "ratio_mmcv_over_ours": round(med["mmcv"] / med["ours"], 4),
            "agreement": case["agreement"]}


def run(out: Path, repeats: int = 30, warmup: int = 3, seed: int = 0,
        only: Optional[tuple] = None) -> dict:
    """Time every case (or those named in ``only``) on the CPU; write the JSON to ``out``."""
    import mmcv

    import seesaw_lvis.models.ops  # noqa: F401  (installs the dispatchers; timed directly here)

    gen = torch.Generator().manual_seed(seed)
    result = {"benchmark": "CPU ops: ours vs mmcv's CPU kernels", "device_name": device_name("cpu"),
              "torch_version": torch.__version__, "mmcv_version": mmcv.__version__,
              "num_threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
              "seed": seed, "statistic": "median over repeats of one call; train cases: forward "
                                         "+ backward, eval cases: forward without a graph",
              "cases": {}}
    for name, kind, shape, stride, size, n in ROI_CASES:
        if only is None or name in only:
            entry = _measure(_roi_case(kind, shape, stride, size, n, gen), repeats, warmup)
            result["cases"][f"roi_align/{name}"] = {"shape": list(shape), "output_size": size,
                                                    "rois": n, **entry}
    for name, shape, out_ch, groups, dgroups in DCN_CASES:
        if only is None or name in only:
            entry = _measure(_dcn_case(shape, out_ch, groups, dgroups, gen), repeats, warmup)
            result["cases"][f"dcnv2/{name}"] = {"shape": list(shape), "out_channels": out_ch,
                                                "groups": groups, **entry}
    write_json(out, result)
    return result

#!/usr/bin/env python
"""The one check a lent GPU runs (well under 10 minutes), written to one JSON file.

    python scripts/gpu_check.py --out reports/bench/gpu_check.json        # on a CUDA machine
    python scripts/gpu_check.py --dry-run --rows t1_seesaw --out x.json   # anywhere: the same path on the CPU

1. ``mmcv_cuda_ops``: each compiled op the rows use (RoIAlign, nms, CARAFE, DeformRoIPool,
   ModulatedDeformConv2d) runs forward and backward on CUDA tensors: mmcv was built with its
   CUDA ops.
2. ``ours_vs_mmcv``: our plain-PyTorch CARAFE, deformable RoI pooling and DCNv2 (what the CPU
   runs) against mmcv's CUDA kernels, forward and backward (``scripts/gpu_check_ops.py``).
3. ``rows``: ``t1_seesaw`` and ``t2_seesaw`` at ``full`` (LVIS v1's 1203 categories, the paper's
   model) on the GPU, through :func:`seesaw_lvis.bench.full_scale.step_row`: one checked
   training step (finite loss and gradients), ``--iters`` timed steps (seconds per iteration,
   images/s at 2 images per GPU, the paper's batch), peak GPU memory, one prediction.

Exit code 0 when everything passed, 1 when something failed, 2 without CUDA (unless
``--dry-run``, which runs part 3 on the CPU and records parts 1-2 as skipped).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def mmcv_cuda_ops() -> dict:
    """Each op on CUDA, forward and backward: ``{op: "ok" | error}``."""
    import torch
    from mmcv.ops import CARAFEPack, DeformRoIPool, ModulatedDeformConv2dPack, RoIAlign, nms

    dev = torch.device("cuda")
    x = torch.randn(2, 16, 32, 32, device=dev, requires_grad=True)
    rois = torch.tensor([[0, 2., 2., 20., 20.], [1, 4., 6., 30., 28.]], device=dev)
    ops = {
        "RoIAlign": lambda: RoIAlign(7, 0.5, 0)(x, rois).sum(),
        "DeformRoIPool": lambda: DeformRoIPool(7, 0.5, 0, 0.1)(x, rois).sum(),
        "CARAFE": lambda: CARAFEPack(16, 2).to(dev)(x).sum(),
        "ModulatedDeformConv2d": lambda: ModulatedDeformConv2dPack(16, 8, 3, padding=1).to(dev)(x).sum(),
        "nms": lambda: nms(rois[:, 1:].contiguous(), torch.tensor([0.9, 0.8], device=dev), 0.5)[0].sum(),
    }
    out = {}
    for name, run in ops.items():
        try:
            value = run()
            if value.requires_grad:
                value.backward()
            torch.cuda.synchronize()
            out[name] = "ok"
        except Exception as e:  # noqa: BLE001 - reported, the check goes on
            out[name] = f"{type(e).__name__}: {e}"
    return out


def ours_vs_mmcv(tol: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ops.json"
        proc = subprocess.run([sys.executable, str(HERE / "gpu_check_ops.py"), "--tol", str(tol), "--scale-tol",
                               "--out", str(out)], capture_output=True, text=True)
        if not out.is_file():
            return {"passed": False, "error": proc.stderr[-4000:]}
        summary = json.loads(out.read_text())
    return {k: summary[k] for k in ("device", "tol", "worst_max_abs", "passed", "failures")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports/bench/gpu_check.json")
    p.add_argument("--params", default="params/pipeline.yaml")
    p.add_argument("--rows", nargs="+", default=["t1_seesaw", "t2_seesaw"])
    p.add_argument("--iters", type=int, default=10, help="timed training iterations per row")
    p.add_argument("--tol", type=float, default=1e-4, help="ours vs mmcv: max abs difference (scaled)")
    p.add_argument("--dry-run", action="store_true", help="no CUDA needed: the rows on the CPU, ops skipped")
    args = p.parse_args(argv)

    import torch

    from seesaw_lvis.bench.full_scale import step_row
    from seesaw_lvis.io import write_json
    from seesaw_lvis.params import load

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print(json.dumps({"error": "CUDA not available (use --dry-run to run the CPU path)"}))
        return 2
    device = "cuda" if cuda and not args.dry_run else "cpu"
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(0) if device == "cuda"
              else "cpu (dry run)", "torch": torch.__version__}
    t0 = time.perf_counter()
    if device == "cuda":
        import mmcv

        report["mmcv"] = mmcv.__version__
        report["mmcv_cuda_ops"] = mmcv_cuda_ops()
        report["ours_vs_mmcv"] = ours_vs_mmcv(args.tol)
    else:
        report["mmcv_cuda_ops"] = report["ours_vs_mmcv"] = {"skipped": "dry run: no CUDA"}
    params = load(args.params)
    report["rows"] = {}
    with tempfile.TemporaryDirectory() as work:
        for row in args.rows:
            try:
                report["rows"][row] = step_row(params, row, Path(work) / row, device=device,
                                               timed_iters=args.iters if device == "cuda" else 1)
            except Exception as e:  # noqa: BLE001 - reported, the next row still runs
                report["rows"][row] = {"error": f"{type(e).__name__}: {e}"}
            if device == "cuda":
                torch.cuda.empty_cache()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    ops_ok = device != "cuda" or (all(v == "ok" for v in report["mmcv_cuda_ops"].values())
                                  and report["ours_vs_mmcv"].get("passed", False))
    rows_ok = all(r.get("losses_finite") and r.get("grads_finite") for r in report["rows"].values())
    report["passed"] = bool(ops_ok and rows_ok)
    write_json(Path(args.out), report)
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    for row, r in report["rows"].items():
        print(row, {k: r.get(k) for k in ("error", "seconds_per_iter", "images_per_s", "peak_gpu_mb", "peak_rss_mb")})
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

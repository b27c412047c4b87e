"""`full` proven on a CPU: every row, at the paper's settings, builds, takes a training step and predicts.

No GPU has trained a row at ``full`` here, so the bugs of that scale would otherwise show after
hours in a cluster queue. For one row (:func:`step_row`, in a process of its own so that its
peak RSS is its own), resolved at ``full`` on LVIS v1 (1203 categories, the paper's widths and
depths, FPG with 9 stacks, ResNeSt-200 with DCNv2, the five TTA scales with flip):

1. the backbone's ImageNet weights are replaced by a local stand-in (the family's freshly
   initialised backbone, saved to a file: nothing is downloaded), then the model is built and
   initialised as mmengine's Runner does (``MODELS.build``, ``init_weights``: the
   ``Pretrained`` init loads that file);
2. one prediction with masks of two small images (320 x 320 and 256 x 320, a few instances
   each, with polygon masks of random LVIS categories), in eval mode, by the model as
   initialised (measured: after one step at the full learning rate, without the schedule's
   warm-up, the Seesaw rows scored every box under the 1e-4 threshold). The TTA
   row wraps the model in its ``tta_model`` and predicts over every view of its
   ``tta_pipeline``: the five scales times two flips, the scales shrunk by the same factor (the
   longest to 256 px) so that ten views fit a CPU;
3. one training step on the same images, through mmdet's own ``LoadAnnotations`` and
   ``PackDetInputs`` and the row's data preprocessor: the loss, backward, every trainable
   parameter with a finite gradient, then the optimizer step of the row's ``optim_wrapper``.
   The finetune row first freezes the model as its ``FreezeForFinetuneHook`` does (only the new
   classification branches train).

The images are small: the row's own training pipeline (resize to 1333 x 800, InstaBoost, the
1280 crop) is not applied, so the step proves the model at the paper's settings, not its input
size. ``run`` steps every row, each in a subprocess (``python -m seesaw_lvis bench full-scale
--row R``), and writes ``reports/bench/full_scale.json``: per row the parameter counts, the
seconds of each phase and the peak RSS.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seesaw_lvis.bench import peak_rss_mb
from seesaw_lvis.io import write_json

log = logging.getLogger(__name__)

IMAGE_SHAPES = ((320, 320), (256, 320))   # (h, w) of the two test images
TTA_LONGEST = 256                          # the TTA row's largest view, pixels (the paper's: 2000)
INSTANCES = 3                              # instances per image


def full_params(params: Mapping[str, Any], work: Path) -> dict:
    """The params set at ``full`` on LVIS v1 (what a cluster run resolves), its results folder
    in ``work``: the class-frequency file EQL reads is a stand-in of LVIS v1's shape there
    (:func:`seesaw_lvis.data.lvis_sized.class_freq_stand_in`), never the user's."""
    from seesaw_lvis.data.lvis_sized import class_freq_stand_in

    fparams = {**copy.deepcopy(dict(params)), "dataset": "lvis_v1", "scale": "full"}
    fparams["paths"] = {**fparams["paths"], "results": str(work / "results")}
    write_json(work / "results" / "stats" / "class_freq.json", class_freq_stand_in())
    return fparams


def _images(work: Path, num_classes: int, seed: int) -> list[dict]:
    """Two PNG images with ``INSTANCES`` square-ish objects each, as LVIS-style ``instances``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(IMAGE_SHAPES):
        img = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
        instances = []
        for _ in range(INSTANCES):
            s = int(rng.integers(40, 120))
            x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            img[y0:y0 + s, x0:x0 + s] = rng.integers(0, 255, size=3, dtype=np.uint8)
            poly = [x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s]
            instances.append(dict(bbox=[x0, y0, x0 + s, y0 + s], bbox_label=int(rng.integers(num_classes)),
                                  mask=[[float(v) for v in poly]], ignore_flag=0))
        path = work / f"image{i}.png"
        Image.fromarray(img).save(path)
        out.append(dict(img_path=str(path), img_id=i, instances=instances))
    return out


def _batch(samples: list[dict], pipeline: list[dict]) -> dict:
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    transform = Compose(copy.deepcopy(pipeline))
    return pseudo_collate([transform(copy.deepcopy(s)) for s in samples])


# The images at their own size (a Resize to the largest one records img_shape / scale_factor = 1,
# as the row's own resize would).
PLAIN = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
         dict(type="Resize", scale=(max(max(s) for s in IMAGE_SHAPES),) * 2, keep_ratio=True),
         dict(type="PackDetInputs")]


def _pretrained_stand_in(cfg, work: Path) -> None:
    """The backbone's ``init_cfg`` points at a local file of the right shapes (the freshly
    initialised backbone): the Runner's Pretrained init runs, with no download."""
    import torch
    from mmdet.registry import MODELS

    backbone = copy.deepcopy(cfg.model.backbone.to_dict())
    backbone["init_cfg"] = None
    path = work / "backbone_stand_in.pth"
    torch.save({"state_dict": MODELS.build(backbone).state_dict()}, path)
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(path))


def _tta_views(pipeline: list[dict]) -> list[dict]:
    """The row's TTA pipeline with its resize scales shrunk (same ratios, longest TTA_LONGEST)."""
    pipeline = copy.deepcopy(pipeline)
    for step in pipeline:
        if step.get("type") != "TestTimeAug":
            continue
        for alternatives in step["transforms"]:
            sizes = [max(t["scale"]) for t in alternatives if t.get("type") == "Resize"]
            if sizes:
                factor = TTA_LONGEST / max(sizes)
                for t in alternatives:
                    t["scale"] = tuple(int(round(v * factor)) for v in t["scale"])
    return pipeline


def _freeze_for_finetune(model, cfg) -> None:
    """What the finetune row's ``FreezeForFinetuneHook`` does before training."""
    from seesaw_lvis.models.roi_heads.dual_branch import freeze_except, set_frozen_norms_eval

    hook = next(h for h in cfg.custom_hooks if h["type"] == "FreezeForFinetuneHook")
    trainable = [hook["trainable"]] if hook.get("trainable") else []
    freeze_except(model, *trainable)
    set_frozen_norms_eval(model, *trainable)


def _train_step(model, optim, batch: dict) -> dict[str, Any]:
    """One checked step: loss, backward, every gradient finite, optimizer step."""
    import torch

    data = model.data_preprocessor(batch, True)
    loss, log_vars = model.parse_losses(model(**data, mode="loss"))
    optim.backward(loss)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
    without_grad = [n for n, p in trainable if p.grad is None]
    watched = dict(trainable[:1] + trainable[-1:])
    before = {n: p.detach().clone() for n, p in watched.items()}
    optim.step()
    optim.zero_grad()
    return {"trainable_params": sum(p.numel() for _, p in trainable),
            "trainable_modules": sorted({".".join(n.split(".")[:2]) for n, _ in trainable}),
            "losses": {k: float(v) for k, v in log_vars.items()},
            "losses_finite": all(math.isfinite(float(v)) for v in log_vars.values()),
            "grads_finite": not bad, "non_finite_grads": bad[:20],
            "params_without_grad": without_grad[:50],
            "optimizer_moved_weights": any(not torch.equal(before[n], p.detach()) for n, p in watched.items())}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_row(params: Mapping[str, Any], row_id: str, work: Path, seed: int = 0, device: str = "cpu",
             timed_iters: int = 0) -> dict[str, Any]:
    """Build ``row_id`` at full, predict, take one checked training step (see the module
    docstring); then ``timed_iters`` more training steps, timed (images/s; the GPU check)."""
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    from seesaw_lvis import compat
    from seesaw_lvis.configs import resolve

    import seesaw_lvis.models  # noqa: F401  (registers the plugins)

    compat.install()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    fparams = full_params(params, work)
    row = fparams["rows"][row_id]
    cfg = resolve.load(fparams, row_id, "full", seed=seed)
    init_default_scope("mmdet")
    _pretrained_stand_in(cfg, work)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    model.to(device)
    times["build"] = time.perf_counter() - t0
    heads = cfg.model.roi_head.bbox_head
    samples = _images(work, (heads[0] if isinstance(heads, list) else heads).num_classes, seed)
    result: dict[str, Any] = {"row": row_id, "kind": row["kind"], "device": device,
                              "params": sum(p.numel() for p in model.parameters())}

    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        if row["kind"] == "tta":
            tta = MODELS.build(dict(**copy.deepcopy(cfg.tta_model), module=model))
            tta.eval()
            batch = _batch(samples, _tta_views(cfg.tta_pipeline))
            result["tta_views"] = len(batch["inputs"])  # [view][image]
            preds = tta.test_step(batch)
        else:
            preds = model.test_step(_batch(samples, PLAIN))
    _sync(device)
    times["predict"] = time.perf_counter() - t0
    result["predictions"] = [{"dets": int(len(p.pred_instances)),
                              "keys": sorted(p.pred_instances.keys()),
                              "mask_shape": list(p.pred_instances.masks.shape[1:]) if "masks" in p.pred_instances
                              else None} for p in preds]

    if row["kind"] in ("train", "finetune"):
        t0 = time.perf_counter()
        model.train()
        if row["kind"] == "finetune":
            _freeze_for_finetune(model, cfg)
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        batch = _batch(samples, PLAIN)
        result.update(_train_step(model, optim, batch))
        _sync(device)
        times["train_step"] = time.perf_counter() - t0
        if timed_iters:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(timed_iters):
                optim.update_params(model.parse_losses(model(**model.data_preprocessor(batch, True),
                                                             mode="loss"))[0])
            _sync(device)
            per_iter = (time.perf_counter() - t0) / timed_iters
            result.update(seconds_per_iter=round(per_iter, 4), images_per_s=round(len(samples) / per_iter, 2))
            if device.startswith("cuda"):
                result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["seconds"] = {k: round(v, 2) for k, v in times.items()}
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def run_one(params: Mapping[str, Any], row_id: str, work: Path, out: Path) -> dict[str, Any]:
    """:func:`step_row`, written to ``out`` (JSON)."""
    result = step_row(params, row_id, work)
    write_json(out, result)
    return result


def run(params: Mapping[str, Any], out: Path, work: Path, rows: list[str] | None = None,
        params_file: str = "params/pipeline.yaml") -> dict[str, Any]:
    """Step every row (or ``rows``), each in a subprocess; write ``out`` (JSON)."""
    import platform

    rows = rows or list(params["rows"])
    results: dict[str, Any] = {}
    for row_id in rows:
        row_out = Path(work) / f"{row_id}.json"
        cmd = [sys.executable, "-m", "seesaw_lvis", "bench", "full-scale", "--params", params_file,
               "--row", row_id, "--work", str(Path(work) / row_id), "--out", str(row_out)]
        log.info("full-scale step of %s: %s", row_id, " ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results[row_id] = {"error": proc.stderr[-4000:], "returncode": proc.returncode}
            log.error("full-scale step of %s failed:\n%s", row_id, proc.stderr[-4000:])
            continue
        results[row_id] = json.loads(row_out.read_text())
        results[row_id]["seconds"]["process"] = round(time.perf_counter() - t0, 2)
        r = results[row_id]
        log.info("%s: %.1f M params, %s s, peak RSS %.1f GB", row_id, r["params"] / 1e6, r["seconds"],
                 r["peak_rss_mb"] / 1024)
    doc = {"what": "every row at full (LVIS v1, 1203 categories, the paper's settings) builds, takes one "
                   "CPU training step and predicts on two small images (seesaw_lvis.bench.full_scale)",
           "images": [list(s) for s in IMAGE_SHAPES], "tta_longest_view": TTA_LONGEST,
           "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
           "date": time.strftime("%Y-%m-%d"), "rows": results}
    write_json(out, doc)
    return doc

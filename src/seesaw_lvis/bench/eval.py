"""Benchmark of the LVIS evaluation: ours vs lvis-api 0.5.3 vs faster-coco-eval 1.8.0, same inputs.

A synthetic LVIS v1 ground truth is built deterministically from ``seed`` (``num_images``
images of 640 x 480 with 1-4 positive categories each, 1-4 polygon instances per category,
object sizes log-uniform so that the small / medium / large ranges all fill, 1203 categories
split into rare / common / frequent as in LVIS v1, negative and not-exhaustive lists as in
LVIS), and ``dets_per_image`` detections per image: jittered copies of the GT (box and mask
moved and scaled together; some with a wrong category) plus false positives of random
categories at random places, scores rounded to 3 decimals (ties are frequent, as in real
detectors' output after score quantisation), masks as compressed RLE. The default sizes are
1,000 images and LVIS v1 val's 19,809, with 300 detections per image.

For each size the two JSON files are written once to a temporary folder, by a child process
(so that the GB of Python objects at val size are gone before any evaluator runs). Then each
(evaluator, IoU type) runs in a fresh child interpreter of its own, which reads the two files
itself and evaluates one IoU type:

* ``ours``: ``seesaw_lvis.evaluation.lvis_eval.evaluate(gt, results, iou_types=(t,))``;
* ``lvis_api``: ``LVIS(gt)`` + ``LVISResults(gt, results, max_dets=300)`` +
  ``LVISEval(...).run()`` (:func:`lvis_api_metrics`);
* ``faster_coco_eval``: ``COCO(gt)`` + ``loadRes`` of each image's 300 top-scoring results
  (what ``LVISResults`` keeps) + ``COCOeval_faster(..., lvis_style=True)`` with
  ``params.maxDets = [300]`` (:func:`faster_coco_eval_metrics`), its defaults otherwise (segm
  IoUs computed in a pool of up to min(CPUs, 8) threads).

``seconds`` is the wall time (``time.perf_counter``) of load + evaluate in the child, its
imports done before the clock starts. ``peak_rss_mb`` is the child's own high-water RSS: the
``VmHWM`` of ``/proc/self/status`` (where there is none, ``ru_maxrss``). Not ``ru_maxrss`` on
Linux: across ``exec`` it keeps the parent's peak, so every child would report at least the
bench's own. It includes the interpreter, this module's imports (numpy, pycocotools) and the
evaluator's (lvis-api's pull in cv2 and matplotlib). A child that dies (e.g. killed by the kernel for
memory) is recorded as ``{"error", "returncode"}``, one that runs past ``timeout`` s as
``{"error": "timeout after ... s"}``, and the others still run. Each child's address space is
capped at ``max_memory_gb`` (default: the machine's memory less 4 GB): an evaluator that needs
more fails with MemoryError, recorded, instead of taking the whole machine into the kernel's
out-of-memory killer (lvis-api at val size passed 22 GB of 24 here).
``max_abs_diff`` is the largest difference to lvis-api over the summary metrics (AP..APf,
AR@300..ARl@300) and every per-category AP (None where lvis-api has no result);
``time_ratio`` is ours' seconds over lvis-api's and over faster-coco-eval's.

``run(Path('reports/bench/eval.json'))`` writes the JSON atomically (``seesaw_lvis.io``), after
each size; ``python -m seesaw_lvis.bench.eval --num-images 1000 --timeout 600`` picks sizes.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from seesaw_lvis.bench import peak_rss_mb
from seesaw_lvis.evaluation.lvis_eval import SUMMARY_KEYS
from seesaw_lvis.io import read_json, write_json

__all__ = ["run", "main", "make_gt", "make_detections", "lvis_api_metrics", "faster_coco_eval_metrics",
           "max_abs_diff", "EVALUATORS", "SIZES"]

IMAGE_W, IMAGE_H = 640, 480
NUM_CATS = 1203  # LVIS v1 (lvis-api's cost grows with images x categories)


def _polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 12
             ) -> list[float]:
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = rng.uniform(0.75, 1.0, n)
    xs = np.clip(cx + rx * rad * np.cos(ang), 0, IMAGE_W - 1)
    ys = np.clip(cy + ry * rad * np.sin(ang), 0, IMAGE_H - 1)
    return np.round(np.stack([xs, ys], 1).reshape(-1), 2).tolist()


def _poly_box(poly: list[float]) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def make_gt(num_images: int = 1000, seed: int = 0, num_cats: int = NUM_CATS) -> dict:
    """A synthetic LVIS v1 ground truth (polygons, areas from the masks), deterministic."""
    rng = np.random.default_rng(seed)
    # LVIS v1's split: 405 frequent, 461 common, 337 rare of 1203
    n_f, n_c = round(num_cats * 405 / 1203), round(num_cats * 461 / 1203)
    freqs = ["f"] * n_f + ["c"] * n_c + ["r"] * (num_cats - n_f - n_c)
    cats = [{"id": k + 1, "name": f"cat{k + 1}", "synset": f"cat{k + 1}.n.01", "frequency": freqs[k],
             "image_count": 0, "instance_count": 0} for k in range(num_cats)]
    # frequent categories appear more often
    weight = np.array([{"f": 8.0, "c": 2.0, "r": 0.5}[f] for f in freqs])
    weight /= weight.sum()
    images, anns = [], []
    ann_id = 1
    for i in range(num_images):
        img_id = i + 1
        n_pos = int(rng.integers(1, 5))
        pos = sorted(int(c) + 1 for c in rng.choice(num_cats, size=n_pos, replace=False, p=weight))
        polys, meta = [], []
        for c in pos:
            for _ in range(int(rng.integers(1, 5))):
                r = math.exp(rng.uniform(math.log(4), math.log(160)))
                cx, cy = rng.uniform(r * 0.5, IMAGE_W - r * 0.5), rng.uniform(r * 0.4, IMAGE_H - r * 0.4)
                polys.append(_polygon(rng, cx, cy, r, r * rng.uniform(0.5, 1.0)))
                meta.append(c)
        rles = mask_utils.frPyObjects(polys, IMAGE_H, IMAGE_W)
        areas = mask_utils.area(rles)
        for poly, c, area in zip(polys, meta, areas):
            anns.append({"id": ann_id, "image_id": img_id, "category_id": c, "segmentation": [poly],
                         "area": float(area), "bbox": _poly_box(poly)})
            ann_id += 1
        others = [k + 1 for k in range(num_cats) if k + 1 not in pos]
        neg = sorted(int(c) for c in rng.choice(others, size=min(len(others), int(rng.integers(2, 12))),
                                                replace=False))
        nel = [c for c in pos if rng.random() < 0.1]
        images.append({"id": img_id, "width": IMAGE_W, "height": IMAGE_H,
                       "neg_category_ids": neg, "not_exhaustive_category_ids": nel})
    return {"info": {"description": "seesaw_lvis eval benchmark"}, "licenses": [], "images": images,
            "annotations": anns, "categories": cats}


def make_detections(gt: dict, dets_per_image: int = 300, seed: int = 0, segm: bool = True,
                    score_decimals: int = 3) -> list[dict]:
    """Detections for ``gt``: jittered GT copies + random false positives, ``dets_per_image``
    per image (fewer if the image has none to copy and FPs fill the rest anyway)."""
    rng = np.random.default_rng(seed + 1)
    by_img: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    cat_ids = [c["id"] for c in gt["categories"]]
    out: list[dict] = []
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        anns = by_img.get(img["id"], [])
        relevant = sorted({a["category_id"] for a in anns} | set(img["neg_category_ids"]))
        polys, boxes, cats = [], [], []
        for a in anns:
            for _ in range(int(rng.integers(1, 4))):
                if len(polys) >= dets_per_image:
                    break
                x, y, bw, bh = a["bbox"]
                s = float(np.exp(rng.normal(0, 0.12)))
                dx, dy = rng.normal(0, 0.08) * bw, rng.normal(0, 0.08) * bh
                cx, cy = x + bw / 2, y + bh / 2
                src = a["segmentation"][0] if isinstance(a["segmentation"], list) else None
                if src is None:
                    continue
                p = np.asarray(src, float).reshape(-1, 2)
                p = np.stack([cx + dx + (p[:, 0] - cx) * s, cy + dy + (p[:, 1] - cy) * s], 1)
                p[:, 0] = np.clip(p[:, 0], 0, w - 1)
                p[:, 1] = np.clip(p[:, 1], 0, h - 1)
                poly = np.round(p.reshape(-1), 2).tolist()
                polys.append(poly)
                boxes.append(_poly_box(poly))
                c = a["category_id"]
                if rng.random() < 0.1:
                    c = int(rng.choice(relevant)) if rng.random() < 0.7 else int(rng.choice(cat_ids))
                cats.append(c)
        while len(polys) < dets_per_image:
            r = math.exp(rng.uniform(math.log(2), math.log(max(4.0, min(w, h) / 3))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            poly = _polygon(rng, cx, cy, r, r * rng.uniform(0.4, 1.0), n=8)
            box = _poly_box(poly)
            if box[2] <= 0 or box[3] <= 0:
                continue
            polys.append(poly)
            boxes.append(box)
            cats.append(int(rng.choice(relevant)) if relevant and rng.random() < 0.6
                        else int(rng.choice(cat_ids)))
        scores = np.round(rng.uniform(0, 1, len(polys)), score_decimals)
        rles = mask_utils.frPyObjects(polys, h, w) if segm else [None] * len(polys)
        for poly, box, c, sc, rle in zip(polys, boxes, cats, scores.tolist(), rles):
            d = {"image_id": img["id"], "category_id": c, "bbox": [round(v, 2) for v in box], "score": sc}
            if segm:
                d["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            out.append(d)
    return out


def _summary(values: dict, prec: np.ndarray, cat_ids: Sequence[int]) -> dict:
    """Our output format: ``values`` (our summary key -> number, -1 for none) and per-category AP
    from ``prec`` (IoU x recall x category, area 'all'), -1 and empty cells as None."""
    out: dict[str, Any] = {k: (None if float(values[k]) == -1 else float(values[k])) for k in SUMMARY_KEYS}
    per_class = {}
    for k, cid in enumerate(cat_ids):
        p = prec[:, :, k]
        p = p[p > -1]
        per_class[str(int(cid))] = float(np.mean(p)) if p.size else None
    out["per_class"] = per_class
    return out


def _lvis_gt(gt_path: str | Path):
    from seesaw_lvis import compat

    compat.restore_numpy_float_alias()  # the one fix lvis 0.5.3 needs (not torch's or mmengine's)
    from lvis import LVIS

    return LVIS(str(gt_path))


def lvis_api_metrics(gt: Any, results: Any, iou_type: str, max_dets: int = 300) -> dict:
    """lvis-api 0.5.3's metrics in our output format (summary + per_class, None for -1).

    ``gt``: a GT file or an ``lvis.LVIS``; ``results``: a results file or list (modified by
    lvis-api: pass a copy)."""
    from seesaw_lvis import compat

    compat.restore_numpy_float_alias()
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = gt if isinstance(gt, LVIS) else _lvis_gt(gt)
    lvis_dt = LVISResults(lvis_gt, str(results) if isinstance(results, Path) else results,
                          max_dets=max_dets)
    ev = LVISEval(lvis_gt, lvis_dt, iou_type)
    ev.run()
    return _summary(ev.get_results(), ev.eval["precision"][:, :, :, 0], ev.params.cat_ids)


# faster-coco-eval's ``stats_as_dict`` labels (lvis_style, maxDets=[300]) of our summary keys:
# its first AR slot ("AR_all") is AR at maxDets[0] = 300, the area ARs are at maxDets[-1] = 300.
_FCE_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
             "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf", "AR@300": "AR_all",
             "ARs@300": "AR_small", "ARm@300": "AR_medium", "ARl@300": "AR_large"}


def _top_per_image(results: list[dict], max_dets: int) -> list[dict]:
    """Each image's ``max_dets`` top-scoring results, in ``LVISResults.limit_dets_per_image``'s
    order (grouped by image; a stable sort, so ties keep the file's order)."""
    by_img: dict[int, list[dict]] = {}
    for r in results:
        by_img.setdefault(r["image_id"], []).append(r)
    return [r for rs in by_img.values()
            for r in (rs if len(rs) <= max_dets else sorted(rs, key=lambda r: r["score"], reverse=True)[:max_dets])]


def faster_coco_eval_metrics(gt: str | Path, results: str | Path | list, iou_type: str, max_dets: int = 300
                             ) -> dict:
    """faster-coco-eval's LVIS-style metrics in our output format (as :func:`lvis_api_metrics`).

    LVIS's rules as lvis-api applies them: ``lvis_style=True`` (a detection counts only where
    its category is among the image's positive or negative ones; unmatched ones of a
    not-exhaustive category are ignored; APr/c/f by the categories' ``frequency``), each image's
    ``max_dets`` top-scoring results kept (``LVISResults``) and ``params.maxDets = [max_dets]``
    (lvis-api's per image and category cap). ``results``: a file or list (modified: pass a copy)."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(str(gt))
    if not isinstance(results, list):
        results = json.loads(Path(results).read_text())
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(_top_per_image(results, max_dets)), iou_type,
                         lvis_style=True)
    ev.params.maxDets = [max_dets]
    ev.run()
    stats = ev.stats_as_dict
    # precision: IoU x recall x category x area x maxDets
    return _summary({k: stats[v] for k, v in _FCE_KEYS.items()}, ev.eval["precision"][:, :, :, 0, -1],
                    ev.params.catIds)


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over summary metrics and per-class AP; inf if one is None, not the other."""
    worst = 0.0

    def cmp(x, y):
        nonlocal worst
        if x is None or y is None:
            if (x is None) != (y is None):
                worst = math.inf
            return
        worst = max(worst, abs(float(x) - float(y)))

    for k in SUMMARY_KEYS:
        cmp(a.get(k), b.get(k))
    pa, pb = a.get("per_class", {}), b.get("per_class", {})
    if set(pa) != set(pb):
        return math.inf
    for k in pa:
        cmp(pa[k], pb[k])
    return worst


def _ours_metrics(gt: str, results: str, iou_type: str) -> dict:
    from seesaw_lvis.evaluation.lvis_eval import evaluate

    return evaluate(gt, results, iou_types=(iou_type,))[iou_type]


def _write_inputs(folder: str, num_images: int, dets_per_image: int, seed: int, num_cats: int) -> dict:
    """The GT and detections files of one size in ``folder`` (gt.json, dt.json); their counts."""
    gt = make_gt(num_images, seed, num_cats)
    dets = make_detections(gt, dets_per_image, seed)
    Path(folder, "gt.json").write_text(json.dumps(gt))
    Path(folder, "dt.json").write_text(json.dumps(dets))
    return {"num_gt": len(gt["annotations"]), "num_detections": len(dets)}


# name -> (module imported before the clock starts, function of (gt, results, iou_type) files)
EVALUATORS = {"ours": ("seesaw_lvis.evaluation.lvis_eval", _ours_metrics),
              "lvis_api": ("lvis", lvis_api_metrics),
              "faster_coco_eval": ("faster_coco_eval", faster_coco_eval_metrics)}
_TASKS = {**EVALUATORS, "inputs": (None, _write_inputs)}
IOU_TYPES = ("bbox", "segm")
SIZES = (1000, 19_809)  # images; LVIS v1 val has 19,809
_CHILD = "import sys; from seesaw_lvis.bench.eval import _child; _child(*sys.argv[1:])"


def _child(task: str, out: str, kwargs: str) -> None:
    """A child process's entry point: ``task`` (an evaluator's name or "inputs") on the JSON
    ``kwargs``; writes ``{"result", "seconds", "peak_rss_mb"}`` to ``out``."""
    module, fn = _TASKS[task]
    if module:
        importlib.import_module(module)
    t0 = time.perf_counter()
    result = fn(**json.loads(kwargs))
    seconds = time.perf_counter() - t0
    write_json(out, {"result": result, "seconds": seconds, "peak_rss_mb": peak_rss_mb()})


def default_memory_gb() -> float:
    """The machine's memory less 4 GB for the system and the bench itself."""
    return max(1.0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 - 4)


def _in_child(task: str, kwargs: dict, folder: str | Path, timeout: float | None = None,
              max_memory_gb: float | None = None) -> dict:
    """``_child(task, ...)`` in a fresh interpreter: what it wrote, or ``{"error", "returncode"}``."""
    out = Path(folder) / f"{task}.out.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", _CHILD, task, str(out), json.dumps(kwargs)]
    cap = int(max_memory_gb * 2**30) if max_memory_gb else None

    def limit() -> None:  # in the child, before exec: the soft limit, within the hard one
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))

    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=limit if cap else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:g} s"}
    capped = f" (address space capped at {max_memory_gb:g} GB)" if cap else ""
    if p.returncode < 0:
        sig = -p.returncode
        oom = " (out of memory?)" if sig == signal.SIGKILL else capped
        return {"error": f"killed by signal {sig}{oom}", "returncode": p.returncode}
    if p.returncode:
        last = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit status {p.returncode}: {last}{capped if 'Memory' in last else ''}",
                "returncode": p.returncode}
    return read_json(out)


def _compare(runs: dict[str, dict]) -> dict:
    """One IoU type's row: per evaluator its numbers (or its error), and ours' time ratios."""
    ref = runs["lvis_api"].get("result")
    row: dict[str, Any] = {}
    for name, r in runs.items():
        row[name] = r if "error" in r else {
            "seconds": round(r["seconds"], 4), "peak_rss_mb": round(r["peak_rss_mb"], 1),
            "AP": r["result"]["AP"], "max_abs_diff": None if ref is None else max_abs_diff(r["result"], ref)}
    row["time_ratio"] = {f"ours/{other}": (round(runs["ours"]["seconds"] / runs[other]["seconds"], 3)
                                           if "error" not in runs["ours"] and "error" not in runs[other] else None)
                         for other in ("lvis_api", "faster_coco_eval")}
    return row


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "pycocotools", "lvis", "faster-coco-eval"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            out[pkg] = None
    return out


def run(out: Path = Path("reports/bench/eval.json"), sizes: Sequence[int] = SIZES, dets_per_image: int = 300,
        seed: int = 0, timeout: float = 3600.0, num_cats: int = NUM_CATS,
        max_memory_gb: float | None = None) -> dict:
    """Every evaluator on every size and IoU type, each in a child process of its own (module
    docstring); writes ``out`` after each size and returns what it holds."""
    max_memory_gb = default_memory_gb() if max_memory_gb is None else max_memory_gb
    result: dict[str, Any] = {"dets_per_image": dets_per_image, "seed": seed, "num_categories": num_cats,
                              "timeout_s": timeout, "max_memory_gb": round(max_memory_gb, 1), "versions": _versions(),
                              "machine": platform.processor() or platform.machine(), "sizes": {}}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            made = _in_child("inputs", {"folder": tmp, "num_images": n, "dets_per_image": dets_per_image,
                                        "seed": seed, "num_cats": num_cats}, tmp)
            entry: dict[str, Any] = {"num_images": n}
            if "error" in made:
                entry["error"] = f"making the inputs: {made['error']}"
            else:
                entry.update(made["result"], generate_s=round(made["seconds"], 3))
                files = {"gt": str(Path(tmp, "gt.json")), "results": str(Path(tmp, "dt.json"))}
                for t in IOU_TYPES:
                    entry[t] = _compare({name: _in_child(name, {**files, "iou_type": t}, tmp, timeout,
                                                         max_memory_gb) for name in EVALUATORS})
        result["sizes"][str(n)] = entry
        write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("reports/bench/eval.json"))
    p.add_argument("--num-images", type=int, nargs="+", default=list(SIZES),
                   help="sizes to run, in images (default: 1000 and LVIS v1 val's 19809)")
    p.add_argument("--dets-per-image", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per evaluator child (default 3600)")
    p.add_argument("--max-memory-gb", type=float, help="address space per evaluator child (default: RAM - 4 GB)")
    a = p.parse_args(argv)
    print(json.dumps(run(a.out, a.num_images, a.dets_per_image, a.seed, a.timeout, max_memory_gb=a.max_memory_gb),
                     indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Benchmark of the LVIS evaluation: lvis-api 0.5.3 vs ``seesaw_lvis.evaluation`` (same inputs).

A synthetic LVIS v1 ground truth is built deterministically from ``seed`` (``num_images``
images of 640 x 480 with 1-4 positive categories each, 1-4 polygon instances per category,
object sizes log-uniform so that the small / medium / large ranges all fill, 60 categories
split into rare / common / frequent, negative and not-exhaustive lists as in LVIS), and
``dets_per_image`` detections per image: jittered copies of the GT (box and mask moved and
scaled together; some with a wrong category) plus false positives of random categories at
random places, scores rounded to 3 decimals (ties are frequent, as in real detectors' output
after score quantisation), masks as compressed RLE.

Both evaluators read the same two JSON files and run in this process, one IoU type at a
time: lvis-api as ``LVIS(gt)`` + ``LVISResults(gt, results)`` + ``LVISEval(...).run()``,
ours as ``evaluate(gt, results, iou_types=(t,))``. Times are wall-clock seconds of one
run each (``time.perf_counter``); ``max_abs_diff`` is the largest difference over the
summary metrics (AP..APf, AR@300..ARl@300) and every per-category AP. Reading the JSON is
a large share of both (the same ``json.load`` for both), so ``in_memory`` also times the
evaluation alone: ours on the loaded GT dict and results list, lvis-api as
``LVISResults(lvis_gt, results)`` + ``LVISEval(...).run()`` on an already built ``LVIS``.

``run(Path('reports/bench/eval.json'))`` writes the JSON atomically (``seesaw_lvis.io``).
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from seesaw_lvis.evaluation.lvis_eval import SUMMARY_KEYS
from seesaw_lvis.io import write_json

__all__ = ["run", "main", "make_gt", "make_detections", "lvis_api_metrics", "max_abs_diff"]

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


def _lvis_gt(gt_path: str | Path):
    from seesaw_lvis import compat

    compat.install()
    from lvis import LVIS

    return LVIS(str(gt_path))


def lvis_api_metrics(gt: Any, results: Any, iou_type: str, max_dets: int = 300) -> dict:
    """lvis-api 0.5.3's metrics in our output format (summary + per_class, None for -1).

    ``gt``: a GT file or an ``lvis.LVIS``; ``results``: a results file or list (modified by
    lvis-api: pass a copy)."""
    from seesaw_lvis import compat

    compat.install()
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = gt if isinstance(gt, LVIS) else _lvis_gt(gt)
    lvis_dt = LVISResults(lvis_gt, str(results) if isinstance(results, Path) else results,
                          max_dets=max_dets)
    ev = LVISEval(lvis_gt, lvis_dt, iou_type)
    ev.run()
    res = ev.get_results()
    out: dict[str, Any] = {k: (None if float(res[k]) == -1 else float(res[k])) for k in SUMMARY_KEYS}
    prec = ev.eval["precision"]
    per_class = {}
    for k, cid in enumerate(ev.params.cat_ids):
        p = prec[:, :, k, 0]
        p = p[p > -1]
        per_class[str(cid)] = float(np.mean(p)) if p.size else None
    out["per_class"] = per_class
    return out


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


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "pycocotools", "lvis", "mmdet"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            out[pkg] = None
    return out


def run(out: Path = Path("reports/bench/eval.json"), num_images: int = 1000, dets_per_image: int = 300,
        seed: int = 0) -> dict:
    from seesaw_lvis.evaluation.lvis_eval import evaluate

    gt = make_gt(num_images, seed)
    dets = make_detections(gt, dets_per_image, seed)
    result: dict[str, Any] = {"num_images": num_images, "dets_per_image": dets_per_image, "seed": seed,
                              "num_gt": len(gt["annotations"]), "num_detections": len(dets),
                              "num_categories": len(gt["categories"]), "versions": _versions(),
                              "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        lvis_api_metrics(gt_path, dets[:10], "bbox")  # imports lvis (and matplotlib) untimed
        for t in ("bbox", "segm"):
            # end to end, from the two files
            t0 = time.perf_counter()
            ours = evaluate(gt_path, dt_path, iou_types=(t,))[t]
            t1 = time.perf_counter()
            theirs = lvis_api_metrics(gt_path, dt_path, t)
            t2 = time.perf_counter()
            # in memory: GT and results already loaded (lvis: LVIS(gt) and the copy untimed)
            lvis_gt, dets_copy = _lvis_gt(gt_path), copy.deepcopy(dets)
            t3 = time.perf_counter()
            evaluate(gt, dets, iou_types=(t,))
            t4 = time.perf_counter()
            lvis_api_metrics(lvis_gt, dets_copy, t)
            t5 = time.perf_counter()
            result[t] = {"lvis_api_s": round(t2 - t1, 3), "ours_s": round(t1 - t0, 3),
                         "speedup": round((t2 - t1) / (t1 - t0), 2),
                         "max_abs_diff": max_abs_diff(ours, theirs),
                         "in_memory": {"lvis_api_s": round(t5 - t4, 3), "ours_s": round(t4 - t3, 3),
                                       "speedup": round((t5 - t4) / (t4 - t3), 2)},
                         "AP_ours": ours["AP"], "AP_lvis_api": theirs["AP"]}
    write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("reports/bench/eval.json"))
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--dets-per-image", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(run(a.out, a.num_images, a.dets_per_image, a.seed), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

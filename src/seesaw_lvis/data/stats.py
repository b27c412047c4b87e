"""Class-frequency statistics of a training split (LVIS v1 format).

Per category: instance count, image count, frequency group by LVIS's rule (recomputed and
checked against the JSON's own ``frequency`` field; a mismatch is reported, not hidden), and
the category repeat factor of repeat-factor sampling (LVIS paper, Gupta et al. 2019, sec. 4):

    f_c = (# training images containing c) / (# training images)
    r_c = max(1, sqrt(t / f_c)),   t = 0.001
    r_i = max over the categories c present in image i of r_c

These are the numbers the RFS finetuning stage samples with and the long-tail plots use.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from seesaw_lvis.data.frequency import frequency_group
from seesaw_lvis.io import atomic_path, read_json, write_json, write_text

log = logging.getLogger(__name__)

CSV_FIELDS = ("category_id", "name", "instance_count", "image_count", "image_fraction",
              "frequency", "frequency_in_json", "repeat_factor")
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}


def compute(train: dict[str, Any], rfs_threshold: float = 0.001, source: str = "train json") -> dict[str, Any]:
    """Statistics of an LVIS-format training dict (see module docstring)."""
    for key in ("images", "annotations", "categories"):
        if key not in train:
            raise ValueError(f"{source}: missing top-level key '{key}'")
    num_images = len(train["images"])
    if num_images == 0:
        raise ValueError(f"{source}: no images")
    known = {c["id"] for c in train["categories"]}
    images_of: dict[int, set[int]] = defaultdict(set)
    instances: dict[int, int] = defaultdict(int)
    cats_of_image: dict[int, set[int]] = defaultdict(set)
    for a in train["annotations"]:
        cid = a["category_id"]
        if cid not in known:
            raise ValueError(f"{source}: annotation {a.get('id')} has unknown category_id {cid}")
        images_of[cid].add(a["image_id"])
        instances[cid] += 1
        cats_of_image[a["image_id"]].add(cid)

    categories, mismatches = [], []
    for cat in sorted(train["categories"], key=lambda c: c["id"]):
        cid = cat["id"]
        n_img = len(images_of[cid])
        frac = n_img / num_images
        group = frequency_group(n_img) if n_img else None
        json_group = cat.get("frequency")
        if json_group is not None and group is not None and json_group != group:
            mismatches.append({"category_id": cid, "name": cat.get("name"), "image_count": n_img,
                               "recomputed": group, "in_json": json_group})
        categories.append({
            "category_id": cid, "name": cat.get("name", str(cid)), "instance_count": instances[cid],
            "image_count": n_img, "image_fraction": frac, "frequency": group,
            "frequency_in_json": json_group,
            "repeat_factor": max(1.0, math.sqrt(rfs_threshold / frac)) if n_img else None,
        })
    r_cat = {c["category_id"]: c["repeat_factor"] for c in categories}
    image_factors = {}
    for img in train["images"]:
        cats = cats_of_image.get(img["id"], ())
        image_factors[str(img["id"])] = max((r_cat[c] for c in cats), default=1.0)

    groups = {g: sum(1 for c in categories if c["frequency"] == g) for g in "rcf"}
    if mismatches:
        log.warning("%s: %d categories' 'frequency' field disagrees with LVIS's rule on the recomputed "
                    "image counts (first: %s)", source, len(mismatches), mismatches[0])
    return {
        "num_images": num_images,
        "num_annotations": len(train["annotations"]),
        "num_categories": len(categories),
        "rfs_threshold": rfs_threshold,
        "groups": groups,
        "unused_categories": sum(1 for c in categories if c["image_count"] == 0),
        "frequency_mismatches": mismatches,
        "expected_epoch_images_rfs": sum(image_factors.values()),
        "categories": categories,
        "image_repeat_factors": image_factors,
    }


def write(stats: dict[str, Any], csv_path: Path, json_path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in stats["categories"]:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_FIELDS})
    write_text(csv_path, buf.getvalue())
    write_json(json_path, stats)


def plot(stats: dict[str, Any], png: Path, svg: Path, title: str) -> None:
    """Categories sorted by training image count (log scale), coloured by frequency group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seesaw_lvis.report.style import GROUP_COLOURS

    cats = sorted((c for c in stats["categories"] if c["image_count"]), key=lambda c: -c["image_count"])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=150)
    xs = range(len(cats))
    ax.bar(xs, [c["image_count"] for c in cats], width=1.0,
           color=[GROUP_COLOURS[c["frequency"]] for c in cats], linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_xlabel("categories, sorted by training image count")
    ax.set_ylabel("training images containing the category")
    for limit in (10.5, 100.5):
        ax.axhline(limit, color="0.4", linestyle=":", linewidth=1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS[g]) for g in "rcf"]
    labels = [f"{GROUP_NAMES[g]} ({stats['groups'][g]})" for g in "rcf"]
    ax.legend(handles, labels, title="LVIS frequency group", frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    for path in (png, svg):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip("."))
    plt.close(fig)


def run(train_json: Path, out_csv: Path, out_json: Path, out_png: Path, out_svg: Path,
        rfs_threshold: float, title: str, lineage: dict[str, str] | None = None) -> dict[str, Any]:
    """``lineage``: the stats stage's (seesaw_lvis.workflow.lineage), kept in the JSON that the
    training stages read, so a re-run of this stage always re-runs them under DVC too."""
    train = read_json(train_json)
    stats = compute(train, rfs_threshold, source=str(train_json))
    stats["source"] = str(train_json)
    if lineage is not None:
        stats["lineage"] = lineage
    write(stats, out_csv, out_json)
    plot(stats, out_png, out_svg, title)
    return stats

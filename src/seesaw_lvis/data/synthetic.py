"""The embedded default dataset: a synthetic long-tailed instance-segmentation set in LVIS v1 format.

Why synthetic: the pipeline must run end to end on a CPU laptop with no download, and the
long-tail effects the paper studies (rare classes drowned by frequent ones) must still be
measurable. So categories are visually distinct but learnable (shape x colour x texture),
images hold several instances at varied scales with occlusion, and category frequencies fall
off geometrically (Zipf-like in rank) so that LVIS's own frequency groups all exist:
rare = 1-10 training images, common = 11-100, frequent = >100.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``: the same
parameters give byte-identical files (PNG images, JSON with sorted keys).

Layout written (the same as real LVIS v1 under ``data/lvis_v1``, so every later stage is
dataset-agnostic)::

    <out>/annotations/lvis_v1_train.json
    <out>/annotations/lvis_v1_val.json
    <out>/train2017/000000000001.png ...
    <out>/val2017/...
    <out>/meta.json              the generator parameters
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from seesaw_lvis.data.frequency import frequency_group
from seesaw_lvis.io import atomic_dir

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross", "arrow")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
    "magenta": (210, 50, 200), "cyan": (40, 200, 210), "orange": (245, 140, 30),
    "purple": (120, 50, 170), "white": (245, 245, 245), "black": (20, 20, 20),
}
TEXTURES = ("solid", "striped")
MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)



@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int = 40
    train_images: int = 500
    val_images: int = 150
    image_size: int = 128
    max_images_per_class: int = 300
    min_val_images_per_class: int = 3
    max_instances_per_image: int = 6
    neg_fraction: float = 0.5
    not_exhaustive_prob: float = 0.02
    seed: int = 0

    def check(self) -> None:
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"synthetic.num_classes={self.num_classes}: must be in 2..{MAX_CLASSES}")
        if self.max_images_per_class > self.train_images:
            raise ValueError(
                f"synthetic.max_images_per_class={self.max_images_per_class} exceeds "
                f"synthetic.train_images={self.train_images}")
        if self.min_val_images_per_class > self.val_images:
            raise ValueError(
                f"synthetic.min_val_images_per_class={self.min_val_images_per_class} exceeds "
                f"synthetic.val_images={self.val_images}")


def target_image_counts(spec: SyntheticSpec) -> list[int]:
    """Training image count per category: geometric from max_images_per_class down to 1."""
    c = spec.num_classes
    return [max(1, round(spec.max_images_per_class ** (1 - k / (c - 1)))) for k in range(c)]


def _categories(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """n distinct (shape, colour, texture) triples in a seeded order (which ones end up rare)."""
    combos = [(s, c, t) for t in TEXTURES for c in COLOURS for s in SHAPES]
    return [combos[i] for i in rng.permutation(len(combos))[:n]]


def _name(cat: tuple[str, str, str]) -> str:
    shape, colour, texture = cat
    return f"{colour}_{texture}_{shape}"


def category_names(spec: SyntheticSpec) -> list[str]:
    """The category names (in id order) ``generate(spec)`` writes, without generating."""
    return [_name(c) for c in _categories(np.random.default_rng(spec.seed), spec.num_classes)]


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(radii: list[float], n: int, offset: float = 0.0) -> list[tuple[float, float]]:
        pts = []
        for i in range(n):
            a = angle + offset + 2 * math.pi * i / n
            rad = radii[i % len(radii)]
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts

    if shape == "circle":
        return ring([r], 32)
    if shape == "square":
        return ring([r], 4, math.pi / 4)
    if shape == "triangle":
        return ring([r], 3, -math.pi / 2)
    if shape == "diamond":
        return ring([r, 0.6 * r], 4)
    if shape == "hexagon":
        return ring([r], 6)
    if shape == "star":
        return ring([r, 0.45 * r], 10, -math.pi / 2)
    if shape == "cross":  # plus sign, arm half-width 0.33 r
        w = 0.33 * r
        local = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
                 (-r, w), (-r, -w), (-w, -w)]
    elif shape == "arrow":
        local = [(-r, -0.3 * r), (0.1 * r, -0.3 * r), (0.1 * r, -0.75 * r), (r, 0.0),
                 (0.1 * r, 0.75 * r), (0.1 * r, 0.3 * r), (-r, 0.3 * r)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in local]


def _rasterize(poly: list[tuple[float, float]], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1)
    return np.asarray(canvas, dtype=bool)


def _mask_to_polygons(mask: np.ndarray, upsample: int = 4) -> list[list[float]]:
    """Outer contours of a binary mask as LVIS polygons [x1, y1, x2, y2, ...].

    Contours run through the centres of boundary pixels, half a pixel inside the true edge;
    on 4x-upsampled masks that error shrinks to 1/8 pixel, so the polygon's area matches the
    drawn pixels (small objects would otherwise lose ~20% of their area).
    """
    import cv2  # installed with mmcv; only needed when generating

    big = np.kron(mask.astype(np.uint8), np.ones((upsample, upsample), np.uint8))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for cnt in contours:
        if len(cnt) >= 3 and cv2.contourArea(cnt) >= upsample * upsample:
            pts = (cnt.reshape(-1, 2).astype(float) + 0.5) / upsample
            polys.append([round(v, 3) for v in pts.reshape(-1).tolist()])
    return polys


def _draw_instance(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, texture: str,
                   period: int, phase: int) -> None:
    if texture == "solid":
        img[mask] = colour
        return
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((xx + yy + phase) // period) % 2 == 0
    dark = np.clip(colour * 0.35, 0, 255)
    img[mask & light] = colour
    img[mask & ~light] = dark


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey background with a horizontal gradient and pixel noise (float, 0-255)."""
    base = rng.uniform(70, 190)
    grad = np.linspace(-25, 25, size)[None, :, None] * rng.choice([-1, 1])
    return np.clip(base + grad + rng.normal(0, 6, (size, size, 3)), 0, 255)


ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES}


def classification_set(n_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced classification set: the pipeline's stand-in for ImageNet.

    Each image holds one object whose shape, colour and texture are drawn uniformly and
    independently (every one of the 160 combinations equally often in expectation, whatever
    the detection categories and their long tail), at a random scale, angle and place, on the
    detection images' backgrounds. Labels are the three attributes, never a detection
    category id: like ImageNet for LVIS, pretraining teaches what objects look like, not the
    label set or its frequencies. Drawn from its own ``seed``, never from the val images.

    Returns ``(images uint8 [n, size, size, 3] RGB, labels int64 [n, 3])``, the label columns
    indexing :data:`ATTRIBUTES` (shape, colour, texture) in order.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    labels = np.empty((n_images, 3), dtype=np.int64)
    colours = list(COLOURS)
    for i in range(n_images):
        s, c, x = int(rng.integers(len(SHAPES))), int(rng.integers(len(colours))), int(rng.integers(len(TEXTURES)))
        img = _background(rng, size)
        r = size * rng.uniform(0.18, 0.42)
        cx, cy = rng.uniform(r * 0.7, size - r * 0.7, size=2)
        mask = _rasterize(_shape_polygon(SHAPES[s], cx, cy, r, rng.uniform(0, 2 * math.pi)), size)
        colour = np.clip(np.array(COLOURS[colours[c]], float) + rng.normal(0, 10, 3), 0, 255)
        _draw_instance(img, mask, colour, TEXTURES[x], period=int(rng.integers(3, 6)), phase=int(rng.integers(0, 6)))
        images[i] = img.astype(np.uint8)
        labels[i] = (s, c, x)
    return images, labels


class _Split:
    """Accumulates one split's images and annotations."""

    def __init__(self, name: str, first_image_id: int):
        self.name, self.next_image_id = name, first_image_id
        self.images: list[dict] = []
        self.annotations: list[dict] = []


def _render_split(rng: np.random.Generator, spec: SyntheticSpec, cats: list[tuple[str, str, str]],
                  per_class_images: list[int], split: _Split, n_images: int, out: Path,
                  first_ann_id: int, progress: bool = False) -> int:
    """Assign categories to images, draw them, and record LVIS annotations. Returns next ann id."""
    size, c = spec.image_size, spec.num_classes
    cats_in_image: list[list[int]] = [[] for _ in range(n_images)]
    for k, count in enumerate(per_class_images):
        for i in rng.choice(n_images, size=min(count, n_images), replace=False):
            cats_in_image[int(i)].append(k)
    # An image with no category would teach nothing: give it the most frequent one.
    for lst in cats_in_image:
        if not lst:
            lst.append(0)

    img_dir = out / f"{split.name}2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_id = first_ann_id
    for i in tqdm(range(n_images), desc=f"{split.name} images", unit="img", disable=not progress):
        image_id = split.next_image_id
        split.next_image_id += 1
        present = sorted(cats_in_image[i])
        # One instance per present category, a second one sometimes while room remains.
        instances = list(present)
        for k in present:
            if len(instances) < spec.max_instances_per_image and rng.random() < 0.3:
                instances.append(k)
        order = rng.permutation(len(instances))
        instances = [instances[j] for j in order]

        img = _background(rng, size)
        owner = np.full((size, size), -1, dtype=np.int32)
        full_area: list[int] = []
        placed: list[int] = []  # category index per drawn instance
        for k in instances:
            shape, colour_name, texture = cats[k]
            mask = None
            for _attempt in range(30):
                r = size * math.exp(rng.uniform(math.log(0.07), math.log(0.24)))
                cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
                poly = _shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
                cand = _rasterize(poly, size)
                if cand.sum() < 30:
                    continue
                # Keep every earlier instance at least 45% visible: overlaps, never erasure.
                ok = True
                for j, area in enumerate(full_area):
                    visible = owner == j
                    if (visible & ~cand).sum() < 0.45 * area:
                        ok = False
                        break
                if ok:
                    mask = cand
                    break
            if mask is None:
                continue
            colour = np.clip(np.array(COLOURS[colour_name], float) + rng.normal(0, 10, 3), 0, 255)
            _draw_instance(img, mask, colour, texture, period=int(rng.integers(3, 6)),
                           phase=int(rng.integers(0, 6)))
            owner[mask] = len(full_area)
            full_area.append(int(mask.sum()))
            placed.append(k)

        file_rel = f"{split.name}2017/{image_id:012d}.png"
        Image.fromarray(img.astype(np.uint8)).save(out / file_rel, format="PNG", compress_level=6)

        annotated: dict[int, int] = {}
        not_exhaustive: set[int] = set()
        for j, k in enumerate(placed):
            visible = owner == j
            polys = _mask_to_polygons(visible)
            if not polys:
                continue
            cat_id = k + 1
            if annotated.get(cat_id, 0) >= 1 and rng.random() < spec.not_exhaustive_prob:
                # As in LVIS: an instance left unannotated, and the category flagged for it.
                not_exhaustive.add(cat_id)
                continue
            ys, xs = np.nonzero(visible)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
            split.annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": cat_id,
                "segmentation": polys, "area": float(visible.sum()),
                "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
            })
            annotated[cat_id] = annotated.get(cat_id, 0) + 1
            ann_id += 1

        absent = [k + 1 for k in range(c) if (k + 1) not in annotated and (k + 1) not in not_exhaustive]
        n_neg = int(round(spec.neg_fraction * len(absent)))
        neg = sorted(int(x) for x in rng.choice(absent, size=n_neg, replace=False)) if n_neg else []
        split.images.append({
            "id": image_id, "width": size, "height": size, "license": 0,
            "coco_url": file_rel, "flickr_url": "", "date_captured": "2020-01-01 00:00:00",
            "neg_category_ids": neg, "not_exhaustive_category_ids": sorted(not_exhaustive),
        })
    return ann_id


def _category_records(cats: list[tuple[str, str, str]], train: _Split) -> list[dict[str, Any]]:
    """LVIS category entries with counts measured on the training split (as in LVIS v1)."""
    image_sets: dict[int, set[int]] = {k + 1: set() for k in range(len(cats))}
    instances = {k + 1: 0 for k in range(len(cats))}
    for a in train.annotations:
        image_sets[a["category_id"]].add(a["image_id"])
        instances[a["category_id"]] += 1
    records = []
    for k, (shape, colour, texture) in enumerate(cats):
        name = _name(cats[k])
        n_img = len(image_sets[k + 1])
        records.append({
            "id": k + 1, "name": name, "synset": f"{name}.n.01", "synonyms": [name],
            "def": f"a {colour} {texture} {shape}", "image_count": n_img,
            "instance_count": instances[k + 1], "frequency": frequency_group(n_img),
        })
    return records


def generate(spec: SyntheticSpec, out: str | Path, progress: bool = False) -> Path:
    """Write the dataset to ``out`` atomically (a half-generated dataset never appears there)."""
    spec.check()
    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    cats = _categories(rng, spec.num_classes)
    train_counts = target_image_counts(spec)
    val_counts = [min(spec.val_images,
                      max(spec.min_val_images_per_class, round(n * spec.val_images / spec.train_images)))
                  for n in train_counts]
    with atomic_dir(out) as tmp:
        train = _Split("train", first_image_id=1)
        next_ann = _render_split(rng, spec, cats, train_counts, train, spec.train_images, tmp, 1, progress)
        val = _Split("val", first_image_id=spec.train_images + 1)
        _render_split(rng, spec, cats, val_counts, val, spec.val_images, tmp, next_ann, progress)
        categories = _category_records(cats, train)
        info = {"description": "seesaw_lvis synthetic long-tailed dataset (LVIS v1 format)",
                "version": "1.0", "year": 2020, "contributor": "seesaw_lvis", "date_created": "2020-01-01"}
        licenses = [{"id": 0, "name": "CC0", "url": ""}]
        (tmp / "annotations").mkdir()
        for split in (train, val):
            doc = {"info": info, "licenses": licenses, "categories": categories,
                   "images": split.images, "annotations": split.annotations}
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            (tmp / "annotations" / f"lvis_v1_{split.name}.json").write_text(text + "\n")
        (tmp / "meta.json").write_text(json.dumps(asdict(spec), sort_keys=True, indent=2) + "\n")
    return out


def spec_from_params(params: dict) -> SyntheticSpec:
    return SyntheticSpec(seed=int(params["seed"]), **params["synthetic"])

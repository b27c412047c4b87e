"""Resolve a table row into the config that runs: row file + dataset binding + scale overlay.

``load(params, row_id)`` reads ``src/seesaw_lvis/configs/<row config>`` (which inherits from the
row above), binds it to the pipeline's dataset (paths, classes, the class-frequency file) and
applies the scale overlay of ``params/scales.yaml``:

* ``full``: no overlay. With ``dataset: lvis_v1`` the resolved config is the row file itself
  (LVIS v1 paths and 1203 classes are already what the files say).
* ``mini`` / ``ci``: a documented departure from the paper, in sizes only: image sizes times a
  factor, shallower/narrower backbones, narrower FPN/RoI features, epochs turned into a few
  iterations (milestones kept at the same fractions), smaller batches, no ImageNet weights.
  Every row's modification (its module, loss, sampler, augmentation) is left in place;
  ``tests/config`` checks that by diffing consecutive resolved rows at every scale.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from seesaw_lvis.data.frequency import lvis_v1_fraction_for, lvis_v1_prior_for
from seesaw_lvis.params import dataset_dir, pretrain_path

CONFIG_DIR = Path(__file__).resolve().parent

# Dataset classes whose instances the pipeline rebinds to the chosen dataset.
LVIS_DATASETS = {"LVISV1Dataset", "LVISDataset"}
LVIS_METRICS = {"LVISMetric"}
# Pipeline transforms whose size arguments the image_scale factor shrinks.
SIZE_TRANSFORMS = {"Resize", "RandomResize", "RandomChoiceResize", "RandomCrop", "FixShapeResize"}
SIZE_KEYS = ("scale", "scales", "crop_size")
# Feature widths: a value of 256 (mmdet's default everywhere) becomes the overlay's `channels`.
CHANNEL_KEYS = ("in_channels", "out_channels", "feat_channels", "conv_out_channels", "inter_channels",
                "delta_fc_channels")
FULL_CHANNELS, FULL_FC_CHANNELS = 256, 1024
# Mask heads whose per-class output channels the overlay's mask_class_agnostic shares (mmdet's
# MaskIoU head indexes per-class masks: the mask scoring rows of Table 2 must keep theirs).
MASK_HEADS = {"FCNMaskHead", "HTCMaskHead"}


# Stages run from the repository root and declare the configs under src/ as their deps: read
# those (a checkout's own files), and the installed package's only outside a checkout.
WORKTREE_CONFIG_DIR = Path("src/seesaw_lvis/configs")


def row_config_file(row: Mapping[str, Any]) -> Path:
    base = WORKTREE_CONFIG_DIR if (WORKTREE_CONFIG_DIR / row["config"]).is_file() else CONFIG_DIR
    path = base / row["config"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file of row '{row.get('title', row['config'])}' not found")
    return path


def walk(node: Any, visit: Callable[[dict], None], _seen: set[int] | None = None) -> None:
    """Call ``visit`` once on every dict inside ``node`` (dicts and lists, depth first).

    A config may hold the same dict twice (``{{_base_.train_pipeline}}`` shares objects):
    each is visited once, or an overlay would shrink it twice.
    """
    seen = set() if _seen is None else _seen
    if isinstance(node, dict):
        if id(node) in seen:
            return
        seen.add(id(node))
        visit(node)
        for value in list(node.values()):
            walk(value, visit, seen)
    elif isinstance(node, (list, tuple)):
        for value in node:
            walk(value, visit, seen)


def class_names(params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Category names of the synthetic dataset (None for LVIS v1: mmdet's METAINFO has them)."""
    if params["dataset"] != "synthetic":
        return None
    from seesaw_lvis.data.synthetic import category_names, spec_from_params

    return tuple(category_names(spec_from_params(params)))


def bind_dataset(cfg, params: Mapping[str, Any]) -> None:
    root = str(dataset_dir(params)) + "/"
    names = class_names(params)
    num_classes = len(names) if names is not None else None
    freq_file = f"{params['paths']['results']}/stats/class_freq.json"
    priors_moved: set[int] = set()  # an init dict shared by two heads moves once

    def visit(d: dict) -> None:
        if d.get("type") in LVIS_DATASETS:
            d["data_root"] = root
            if names is not None:
                d["metainfo"] = dict(classes=names)
        if d.get("type") in LVIS_METRICS:
            d["ann_file"] = root + "annotations/lvis_v1_val.json"
        if num_classes is not None and "num_classes" in d:
            d["num_classes"] = num_classes
        if "freq_file" in d:
            d["freq_file"] = freq_file
        # EQL's lambda and RFS's t are fractions of LVIS v1's training images: the same image
        # counts on the synthetic set (data.frequency.lvis_v1_fraction_for)
        if d.get("type") == "EQLoss":
            d["lambda_"] = lvis_v1_fraction_for(params, d["lambda_"])
        if d.get("type") == "ClassBalancedDataset":
            d["oversample_thr"] = lvis_v1_fraction_for(params, d["oversample_thr"])
        # A sigmoid classifier's bias prior (EQL's head) is a share of the classes: the same
        # share of this dataset's (data.frequency.lvis_v1_prior_for). Softmax heads that inherit
        # the init (Seesaw's row) are left alone: a bias shared by every logit changes nothing.
        loss = d.get("loss_cls")
        if num_classes is not None and isinstance(loss, dict) and loss.get("use_sigmoid"):
            inits = d.get("init_cfg") or []
            for init in inits if isinstance(inits, (list, tuple)) else [inits]:
                if "bias_prob" in init and id(init) not in priors_moved:
                    priors_moved.add(id(init))
                    init["bias_prob"] = lvis_v1_prior_for(params, init["bias_prob"], num_classes)

    walk(cfg._cfg_dict, visit)
    cfg.data_root = root


def backbone_family(cfg) -> str:
    """Which pretrained weights a resolved config's backbone takes (``pretrain_<family>``)."""
    return "resnest" if cfg.model.backbone.type == "ResNeSt" else "resnet"


def bind_pretrained(cfg, params: Mapping[str, Any], scale: str) -> None:
    """The backbone starts from the local weights of its family's pretrain stage.

    At ``full`` these are the ImageNet weights the paper's configs name (``torchvision://
    resnet50``, ``open-mmlab://resnest200``), fetched once by that stage with their published
    checksums, so that no training job downloads (compute nodes need no internet); at
    ``mini`` / ``ci`` the pipeline's own pretraining on the generator's balanced set. The
    paper's ``frozen_stages`` and ``norm_eval`` are left as the row's config has them.
    """
    overlay = params["scales"][scale]
    if overlay is not None and not overlay["pretrained"]:
        return
    backbone = cfg.model.backbone
    weights = str(pretrain_path(params, backbone_family(cfg)))
    backbone.init_cfg = dict(type="Pretrained", checkpoint=weights)


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(8, int(round(value * factor)))
    if isinstance(value, (list, tuple)):
        return type(value)(_scaled(v, factor) for v in value)
    return value


@functools.lru_cache(maxsize=None)
def _implicit_widths(kind: str) -> tuple[tuple[str, int], ...]:
    """Width arguments a registered model component takes by DEFAULT with mmdet's full widths
    (256 channels, 1024 fc): ``((key, default), ...)``.

    Configs rarely spell these out (``Shared4Conv1FCBBoxHead``'s four 256-channel convs, the
    MaskIoU and global-context heads), and an overlay that shrinks only written values leaves
    them at full width: at ``mini`` that made those heads ~5x slower than the whole rest of the
    model. The overlay shrinks them as if they were written.
    """
    import inspect

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import seesaw_lvis.models  # noqa: F401  (our heads register themselves)

    register_all_modules(init_default_scope=False)
    cls = MODELS.get(kind)
    if cls is None or not inspect.isclass(cls):
        return ()
    found: dict[str, int] = {}
    for klass in cls.__mro__:  # the subclass's default wins
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            full = FULL_FC_CHANNELS if name == "fc_out_channels" else FULL_CHANNELS
            if (name in CHANNEL_KEYS or name == "fc_out_channels") and p.default == full:
                found.setdefault(name, p.default)
    return tuple(sorted(found.items()))


def _backbone_channels(backbone: dict) -> list[int]:
    base = backbone.get("base_channels", 64)
    expansion = 1 if backbone["type"] == "ResNet" and backbone["depth"] in (18, 34) else 4
    return [base * expansion * 2 ** i for i in range(4)]


def per_table(value: Any, table: int | None) -> Any:
    """An overlay value for a row of ``table``: one value for every row, or one per table
    (``{table1: null, table2: 150}``: a table not named gets None)."""
    if isinstance(value, Mapping):
        return value.get(f"table{table}")
    return value


def _to_iterations(cfg, overlay: Mapping[str, Any], table: int | None = None) -> None:
    """Epoch schedules become iteration schedules of the same shape, scaled down.

    ``iters_per_epoch x epochs ** schedule_exponent`` iterations (an exponent below 1
    compresses long schedules more than short ones but keeps their order, so 1x < 2x < 45e
    stays visible), capped by ``max_iters`` (for every row or per table); every epoch
    boundary (milestones, scheduler begin/end) scales by the same factor, so LR steps keep
    their place in the schedule.
    """
    epochs = cfg.train_cfg.get("max_epochs") or 12
    total = int(round(overlay["iters_per_epoch"] * epochs ** overlay["schedule_exponent"]))
    cap = per_table(overlay["max_iters"], table)
    if cap:
        total = min(total, cap)
    per_epoch = total / epochs

    def at(epoch: float) -> int:
        return min(total, int(round(epoch * per_epoch)))

    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=total, val_interval=total + 1)
    schedulers = []
    for s in cfg.param_scheduler:
        s = dict(s)
        if s.get("by_epoch", True):
            s["by_epoch"] = False
            s["begin"], s["end"] = at(s.get("begin", 0)), at(s.get("end", epochs))
            if "milestones" in s:
                s["milestones"] = [at(m) for m in s["milestones"]]
        elif s["type"] == "LinearLR":  # warm-up: the first ~5% of the scaled schedule
            s["end"] = max(1, min(s.get("end", 500), total // 20))
        schedulers.append(s)
    cfg.param_scheduler = schedulers
    # A checkpoint per (scaled) epoch, but at most ~10 per run: short overlay schedules have
    # epochs of a few iterations, and each checkpoint writes the weights and optimizer state
    # (131 MB, ~0.6 s for the FPG rows at mini). A preempted job then loses at most a tenth
    # of its run. (full keeps mmdet's per-epoch checkpoints: no overlay.)
    interval = max(1, int(round(per_epoch)), math.ceil(total / 10))
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=interval,
                                        max_keep_ckpts=2, save_last=True)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=max(1, min(10, total // 10)))
    cfg.log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)


def _shrink_sampling(d: dict, overlay: Mapping[str, Any]) -> None:
    """Fewer RoIs and proposals per image: the cost of the heads scales with them."""
    if d.get("type") == "RandomSampler" and d.get("num", 0) > 256:  # the RoI heads' 512
        d["num"] = overlay["rois_per_image"]
    for key in ("nms_pre", "max_per_img"):
        if key in d and "nms" in d and d[key] >= 1000:  # RPN proposal settings
            d[key] = overlay["proposals"]


def spread(items: list, n: int) -> list:
    """``n`` of ``items``, evenly spread and keeping both ends (one: the middle one)."""
    if n >= len(items):
        return list(items)
    if n == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _shorten_fpg(d: dict, stack_times: int) -> None:
    """FPG with its first ``stack_times`` stacks: paths and skip pattern cut to match (mmdet's
    pattern skips level i in stacks 0..3-i, so 5 stacks still process every level)."""
    if stack_times >= d["stack_times"]:
        return
    d["stack_times"] = stack_times
    d["paths"] = list(d["paths"])[:stack_times]
    if d.get("skip_inds") is not None:
        d["skip_inds"] = [tuple(i for i in level if i < stack_times) for level in d["skip_inds"]]


def _fewer_tta_scales(d: dict, n: int) -> None:
    """TestTimeAug: keep ``n`` of the resize alternatives (evenly spread, smallest and largest
    kept); every other augmentation (flips) stays."""
    transforms = list(d["transforms"])
    for i, alternatives in enumerate(transforms):
        if alternatives and all(t.get("type") in SIZE_TRANSFORMS for t in alternatives):
            transforms[i] = spread(list(alternatives), n)
    d["transforms"] = transforms


def apply_overlay(cfg, overlay: Mapping[str, Any], table: int | None = None) -> None:
    factor = overlay["image_scale"]
    mask_class_agnostic = per_table(overlay["mask_class_agnostic"], table)

    def visit(d: dict) -> None:
        kind = d.get("type")
        if kind in SIZE_TRANSFORMS:
            for key in SIZE_KEYS:
                if key in d:
                    d[key] = _scaled(d[key], factor)
        if kind == "ResNet":
            d["depth"] = overlay["resnet_depth"]
        if kind == "ResNeSt":
            d["depth"] = overlay["resnest_depth"]
            d["stem_channels"] = overlay["base_channels"]
        if kind in ("ResNet", "ResNeSt"):
            d["base_channels"] = overlay["base_channels"]
            # pretrained: the paper's frozen stem and BN statistics (frozen_stages, norm_eval)
            # stay as the row's config has them; the weights are bound by bind_pretrained.
            if not overlay["pretrained"]:
                # From scratch: nothing to keep frozen (the paper freezes the pretrained stem
                # and BN statistics), so every stage and every BN layer trains.
                d["init_cfg"] = None
                d["frozen_stages"] = -1
                d["norm_eval"] = False
        if "stack_times" in d and "paths" in d:  # FPG necks
            _shorten_fpg(d, overlay["fpg_stack_times"])
        if kind == "TestTimeAug":
            _fewer_tta_scales(d, overlay["tta_scales"])
        if isinstance(kind, str):
            for key, default in _implicit_widths(kind):
                d.setdefault(key, default)
        for key in CHANNEL_KEYS:
            if d.get(key) == FULL_CHANNELS:
                d[key] = overlay["channels"]
        if d.get("fc_out_channels") == FULL_FC_CHANNELS:
            d["fc_out_channels"] = overlay["fc_channels"]
        if "compressed_channels" in d:
            d["compressed_channels"] = min(d["compressed_channels"], overlay["channels"])
        if d.get("max_per_img") == 300 and "nms_pre" not in d:  # LVIS's detections per image
            d["max_per_img"] = overlay["max_dets"]
        if mask_class_agnostic and kind in MASK_HEADS:
            d["class_agnostic"] = True
        _shrink_sampling(d, overlay)

    walk(cfg._cfg_dict, visit)
    model = cfg.model
    if "neck" in model and isinstance(model.neck.get("in_channels"), (list, tuple)):
        model.neck.in_channels = _backbone_channels(model.backbone)
    _to_iterations(cfg, overlay, table)
    # The overlay sets the LR itself, for every row or per table (scales.yaml: lr): mini's
    # Table 1 takes 4x mmdet's linear scaling of 0.02 per 16 images to its batch of 2 for its
    # short schedule; Table 2's ResNeSt+DCN blows up at that rate and keeps the linear scaling.
    lr = per_table(overlay["lr"], table)
    if lr is None:
        raise KeyError(f"params/scales.yaml: scale overlay's 'lr' {dict(overlay['lr'])} names no "
                       f"learning rate for table{table}")
    cfg.optim_wrapper.optimizer.lr = lr
    clip = per_table(overlay["clip_grad"], table)
    if clip:  # mmdet's usual clip (e.g. its RetinaNet/FCOS configs): L2 norm of all gradients
        cfg.optim_wrapper.clip_grad = dict(max_norm=clip, norm_type=2)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if loader is None:
            continue
        if name == "train_dataloader":
            loader.batch_size = overlay["batch_size"]
        loader.num_workers = overlay["num_workers"]
        loader.persistent_workers = overlay["num_workers"] > 0


def load(params: Mapping[str, Any], row_id: str, scale: str | None = None, seed: int | None = None):
    """The resolved mmengine Config of ``row_id`` for the pipeline's dataset and scale, trained
    with ``seed`` (a replicate seed of ``seeds:``; default the params' data ``seed``)."""
    from mmengine.config import Config

    from seesaw_lvis import compat

    compat.install()  # before Config.fromfile: mmengine's external-config lookup is cached there
    if row_id not in params["rows"]:
        raise KeyError(f"row '{row_id}' not in params/rows.yaml (rows: {', '.join(params['rows'])})")
    scale = scale or params["scale"]
    row = params["rows"][row_id]
    cfg = Config.fromfile(row_config_file(row))
    bind_dataset(cfg, params)
    if row.get("seesaw"):  # a cell of the Seesaw ablation grid (seesaw_lvis.sweep)
        set_factors(cfg, row["seesaw"]["p"], row["seesaw"]["q"], f"row {row_id} ({row['config']})")
    overlay = params["scales"][scale]
    if overlay:
        apply_overlay(cfg, overlay, row.get("table"))
    bind_pretrained(cfg, params, scale)
    cfg.randomness = dict(seed=params["seed"] if seed is None else int(seed))
    return cfg


def config_hash(cfg) -> str:
    """A short stable hash of a resolved config (its dict, key-sorted), for run tags."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Seesaw's factors: read (a config's text, a resolved config) and set (the ablation grid's
# cells, seesaw_lvis.sweep)
# --------------------------------------------------------------------------------------------
SEESAW_TYPES = ("SeesawLoss", "DistSeesawLoss")   # mmdet's and ours (seesaw_lvis.models)


def _seesaw_dicts(tree: ast.AST):
    """The ``dict(type='...SeesawLoss', ...)`` calls and literals of a config file's syntax."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            items = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        elif isinstance(node, ast.Dict):
            items = {k.value: v for k, v in zip(node.keys, node.values)
                     if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        else:
            continue
        t = items.get("type")
        if isinstance(t, ast.Constant) and t.value in SEESAW_TYPES:
            yield items


def seesaw_factors(config_text: str, source: str = "<config>") -> tuple[float | None, float | None] | None:
    """(p, q) of the last Seesaw loss written in a config's Python text (None: no Seesaw loss;
    a factor left to the class default: None), read from its syntax without running it."""
    found = None
    for items in _seesaw_dicts(ast.parse(config_text, filename=source)):
        found = tuple(float(n.value) if isinstance(n, ast.Constant) and isinstance(n.value, (int, float))
                      else None for n in (items.get("p"), items.get("q")))
    return found


def seesaw_factors_of(cfg) -> tuple[float, float] | None:
    """(p, q) of a resolved config's (first) Seesaw loss, None without one."""
    found: list[tuple[float, float]] = []
    walk(cfg._cfg_dict, lambda d: found.append((float(d["p"]), float(d["q"])))
         if d.get("type") in SEESAW_TYPES and "p" in d and "q" in d else None)
    return found[0] if found else None


def set_factors(cfg, p: float, q: float, source: str) -> None:
    """Set p and q of every Seesaw loss of a resolved config (a cascade has one per stage)."""
    hit = []

    def visit(d: dict) -> None:
        if d.get("type") in SEESAW_TYPES:
            d["p"], d["q"] = float(p), float(q)
            hit.append(d)

    walk(cfg._cfg_dict, visit)
    if not hit:
        raise ValueError(f"{source}: no Seesaw loss in the resolved config to set p={p:g}, q={q:g} on")

"""Every row of Tables 1 and 2 as a config delta: resolves, builds, trains a step, infers.

* each row differs from the row above by exactly its modification (resolved configs diffed,
  at every scale, so an accidental extra change or a scale overlay dropping a module fails);
* the `full` configs carry the paper's values;
* at `ci` scale each row's model builds and runs one training step and one inference on CPU.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from seesaw_lvis.configs import resolve
from seesaw_lvis.data import stats
from seesaw_lvis.data.frequency import LVIS_V1_TRAIN_IMAGES, lvis_v1_fraction_for

# What each row may change relative to the row above (dotted key prefixes of the resolved
# config). The base rows of each table have no row above.
MODIFICATIONS = {
    "t1_eql": ["model.roi_head.bbox_head.loss_cls", "model.roi_head.bbox_head.init_cfg"],
    "t1_seesaw": ["model.roi_head.bbox_head.loss_cls", "model.roi_head.bbox_head.cls_predictor_cfg"],
    "t2_mask_rcnn": ["train_cfg", "param_scheduler"],
    # the box head type: a normalised box head needs convs (mmdet's gn-all configs switch to
    # Shared4Conv1FC for it); see configs/t2_02_syncbn.py
    "t2_syncbn": ["norm_cfg", "model.backbone.norm_cfg", "model.backbone.norm_eval", "model.neck.norm_cfg",
                  "model.roi_head.bbox_head.type", "model.roi_head.bbox_head.norm_cfg",
                  "model.roi_head.mask_head.norm_cfg"],
    "t2_carafe": ["model.roi_head.mask_head.upsample_cfg"],
    "t2_htc_lite": ["model.type", "model.roi_head", "model.train_cfg.rcnn", "model.train_cfg.rpn_proposal",
                    "model.test_cfg.rcnn", "carafe"],
    "t2_tsd": ["model.roi_head.bbox_head"],
    "t2_mask_scoring": ["model.roi_head.mask_iou_head"],
    "t2_train_aug": ["train_pipeline", "train_dataloader.dataset.pipeline", "train_cfg", "param_scheduler"],
    "t2_fpg": ["model.neck", "model.data_preprocessor.pad_size_divisor", "fpg_trans"],
    "t2_resnest": ["model.backbone"],
    "t2_seesaw": ["model.roi_head.bbox_head"],
    "t2_finetune": ["model.roi_head.finetune_cls_branch", "model.roi_head.ft_branch_init", "custom_hooks",
                    "find_unused_parameters", "train_dataloader.dataset", "train_cfg", "param_scheduler"],
    "t2_tta": ["tta_model", "tta_pipeline"],
}

# At ci/mini the overlay maps ResNet-50 to ResNet-18 (BasicBlock) but ResNeSt-200 to ResNeSt-50
# (Bottleneck), so the backbone swap also changes the FPN's input widths there.
# The overlay's checkpoint and log intervals follow the (scaled) schedule length.
_SCHEDULE_HOOKS = ["default_hooks.checkpoint.interval", "default_hooks.logger.interval"]
OVERLAY_CONSEQUENCES = {"t2_resnest": ["model.neck.in_channels"], "t2_mask_rcnn": _SCHEDULE_HOOKS,
                        "t2_train_aug": _SCHEDULE_HOOKS, "t2_finetune": _SCHEDULE_HOOKS}
# Rows whose modification is the schedule alone: at ci (two iterations) it cannot show.
SCHEDULE_ONLY = {"t2_mask_rcnn"}


def flatten(node, prefix=""):
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(node, (list, tuple)) and any(isinstance(v, dict) for v in node):
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = node
    return out


def _strip_index(key: str) -> str:
    """model.roi_head.bbox_head.1.loss_cls -> model.roi_head.bbox_head.loss_cls (cascade lists)."""
    return ".".join(p for p in key.split(".") if not p.isdigit())


def changed_keys(a, b) -> set[str]:
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k for k in fa.keys() | fb.keys() if fa.get(k, object()) != fb.get(k, object())}


_RESOLVED: dict[tuple[str, str, str], object] = {}


def resolved(params, row_id, scale):
    """Resolved configs, parsed once per (dataset, row, scale) for the whole module."""
    key = (params["dataset"], row_id, scale)
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve.load(params, row_id, scale)
    return _RESOLVED[key]


def row_pairs(params):
    for table in (1, 2):
        ids = [r for r, v in params["rows"].items() if v["table"] == table]
        yield from zip(ids, ids[1:])


@pytest.fixture(scope="module")
def lvis_params(default_params):
    return {**copy.deepcopy(default_params), "dataset": "lvis_v1"}


def test_every_row_has_a_declared_modification(default_params):
    firsts = {"t1_ce"}
    assert set(default_params["rows"]) - firsts == set(MODIFICATIONS)


@pytest.mark.parametrize("scale", ["full", "mini", "ci"])
def test_consecutive_rows_differ_by_exactly_their_modification(lvis_params, scale):
    for parent, child in row_pairs(lvis_params):
        a, b = resolved(lvis_params, parent, scale), resolved(lvis_params, child, scale)
        changed = {_strip_index(k) for k in changed_keys(a, b)}
        allowed = MODIFICATIONS[child] + (OVERLAY_CONSEQUENCES.get(child, []) if scale != "full" else [])
        if scale == "ci" and child in SCHEDULE_ONLY:
            continue  # two iterations cannot show a longer schedule
        assert changed, f"{child}: no change from {parent} at {scale}"
        stray = sorted(k for k in changed if not any(k == p or k.startswith(p + ".") for p in allowed))
        assert not stray, f"{child} vs {parent} at {scale}: changes outside its modification: {stray}"


def _values(cfg, key):
    found = []
    resolve.walk(cfg._cfg_dict, lambda d: found.append(d[key]) if key in d else None)
    return found


def test_full_configs_carry_the_papers_values(lvis_params):
    rows = lvis_params["rows"]
    cfgs = {r: resolved(lvis_params, r, "full") for r in rows}
    for r, cfg in cfgs.items():
        assert set(_values(cfg, "num_classes")) == {1203}, r
        assert cfg.model.test_cfg.rcnn.max_per_img == 300, r
        assert cfg.model.backbone.get("init_cfg", {}).get("type") == "Pretrained", r
        assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16, r
    assert cfgs["t1_ce"].train_cfg.max_epochs == 12
    assert cfgs["t2_mask_rcnn"].train_cfg.max_epochs == 24
    assert cfgs["t1_seesaw"].model.roi_head.bbox_head.cls_predictor_cfg == dict(type="NormedLinear", tempearture=20)
    for loss in [cfgs["t1_seesaw"].model.roi_head.bbox_head.loss_cls,
                 *(h.loss_cls for h in cfgs["t2_seesaw"].model.roi_head.bbox_head)]:
        assert loss.type == "DistSeesawLoss" and loss.p == 0.8 and loss.q == 2.0
    for head in cfgs["t2_seesaw"].model.roi_head.bbox_head:
        assert head.cls_predictor_cfg == dict(type="NormedLinear", tempearture=20) and head.pc_cls is False and head.pc_loc is True
    aug = cfgs["t2_train_aug"]
    assert aug.train_cfg.max_epochs == 45
    assert [s for s in aug.param_scheduler if s.type == "MultiStepLR"][0].milestones == [30, 40]
    steps = {t.type: t for t in aug.train_dataloader.dataset.pipeline}
    assert steps["RandomCrop"].crop_size == (1280, 1280)
    longs = [max(s) for s in steps["RandomChoiceResize"].scales]
    assert min(longs) == 768 and max(longs) == 1792
    assert [t.type for t in aug.train_dataloader.dataset.pipeline][1] == "InstaBoost"
    ft = cfgs["t2_finetune"]
    assert ft.train_dataloader.dataset.type == "ClassBalancedDataset"
    assert ft.train_dataloader.dataset.oversample_thr == 1e-3 == lvis_params["stats"]["rfs_threshold"]
    assert ft.train_cfg.max_epochs == 12
    tta = cfgs["t2_tta"].tta_pipeline[1].transforms
    assert [t.scale for t in tta[0]] == [(s, s) for s in (1200, 1400, 1600, 1800, 2000)]
    assert {t.prob for t in tta[1]} == {0.0, 1.0}
    assert cfgs["t2_resnest"].model.backbone.depth == 200
    assert cfgs["t2_resnest"].model.backbone.dcn.type == "DCNv2"
    assert cfgs["t2_fpg"].model.neck.type == "FPGCarafe"
    assert cfgs["t2_fpg"].model.neck.stack_times == 9 == len(cfgs["t2_fpg"].model.neck.paths)


@pytest.mark.parametrize("row_id", ["t2_syncbn", "t2_mask_scoring", "t2_seesaw"])
def test_mini_overlay_shrinks_default_widths_of_heads_and_necks(default_params, row_id):
    """Widths a module takes by default (Shared4Conv1FC's convs, the MaskIoU and global-context
    heads) shrink like written ones: left at 256/1024 they made those heads 5x the cost of the
    rest of the model at mini."""
    from mmengine.registry import init_default_scope
    from torch import nn

    import seesaw_lvis.models  # noqa: F401
    from mmdet.registry import MODELS

    overlay = default_params["scales"]["mini"]
    cfg = resolved(default_params, row_id, "mini")
    init_default_scope("mmdet")
    model = MODELS.build(copy.deepcopy(cfg.model))  # building pops keys (dcn fallback_on_stride): not the cache's
    convs, fcs = {}, {}
    for name, m in model.named_modules():
        if name.startswith("backbone"):
            continue  # ResNet-18 at base width 32 legitimately ends at 256 channels
        if isinstance(m, nn.Conv2d):
            convs[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            fcs[name] = m.out_features
    full = {k: v for k, v in convs.items() if v == resolve.FULL_CHANNELS}
    full |= {k: v for k, v in fcs.items() if v == resolve.FULL_FC_CHANNELS}
    assert not full, f"{row_id} at mini keeps full widths: {full}"
    assert overlay["channels"] in convs.values() and overlay["fc_channels"] in fcs.values()
    # the full config is the paper's: nothing written into it
    assert "conv_out_channels" not in resolved(default_params, "t2_syncbn", "full").model.roi_head.bbox_head


def test_mini_schedule_caps_are_per_table(default_params):
    overlay = default_params["scales"]["mini"]
    for row_id, row in default_params["rows"].items():
        if row["kind"] == "tta":
            continue
        cfg = resolved(default_params, row_id, "mini")
        full = resolved(default_params, row_id, "full")
        epochs = full.train_cfg.get("max_epochs", 12)
        expected = round(overlay["iters_per_epoch"] * epochs ** overlay["schedule_exponent"])
        cap = resolve.per_table(overlay["max_iters"], row["table"])
        assert cfg.train_cfg.max_iters == (min(expected, cap) if cap else expected), row_id
    assert resolve.per_table(7, 2) == 7
    assert resolve.per_table({"table2": 5}, 1) is None


def test_mini_learning_rate_is_per_table(default_params):
    """mini's Table 2 (ResNeSt+DCN) trains at mmdet's linear scaling of the paper's rate,
    Table 1 at 4x it; full keeps the paper's 0.02 per 16 images; a per-table rate that leaves
    a table out is refused, naming it."""
    overlay = default_params["scales"]["mini"]
    for row_id in ("t1_ce", "t1_seesaw", "t2_mask_rcnn", "t2_seesaw", "t2_finetune"):
        table = default_params["rows"][row_id]["table"]
        lr = resolved(default_params, row_id, "mini").optim_wrapper.optimizer.lr
        assert lr == resolve.per_table(overlay["lr"], table), row_id
    assert resolved(default_params, "t1_ce", "mini").optim_wrapper.optimizer.lr == 0.01
    assert resolved(default_params, "t2_seesaw", "mini").optim_wrapper.optimizer.lr == 0.0025
    assert resolved(default_params, "t2_seesaw", "full").optim_wrapper.optimizer.lr == 0.02
    params = copy.deepcopy(default_params)
    params["scales"]["mini"]["lr"] = {"table1": 0.01}
    with pytest.raises(KeyError, match="'lr'.*no learning rate for table2"):
        resolve.load(params, "t2_seesaw", "mini")


def _mask_heads(cfg) -> list[dict]:
    heads = []
    resolve.walk(cfg._cfg_dict, lambda d: heads.append(d) if d.get("type") in resolve.MASK_HEADS else None)
    return heads


def test_mini_masks_class_agnostic_per_table(default_params):
    """mini's mask_class_agnostic shares one mask channel in Table 1's rows (the model then
    predicts one mask per box), Table 2 keeps per-class masks (its MaskIoU head indexes them);
    full is the paper's: class-specific everywhere."""
    import torch

    overlay = default_params["scales"]["mini"]
    for row_id in ("t1_ce", "t1_seesaw", "t2_mask_rcnn", "t2_htc_lite"):
        table = default_params["rows"][row_id]["table"]
        want = bool(resolve.per_table(overlay["mask_class_agnostic"], table))
        mini = _mask_heads(resolved(default_params, row_id, "mini"))
        assert mini and all(bool(h.get("class_agnostic", False)) == want for h in mini), row_id
        assert not any(h.get("class_agnostic") for h in _mask_heads(resolved(default_params, row_id, "full")))
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    head = MODELS.build(_mask_heads(resolved(default_params, "t1_ce", "mini"))[0])
    assert head.conv_logits.out_channels == 1
    assert head(torch.zeros(2, head.in_channels, 14, 14)).shape[1] == 1


def test_spread_keeps_both_ends_evenly():
    assert resolve.spread([0, 1, 2, 3, 4], 3) == [0, 2, 4]
    assert resolve.spread([0, 1, 2, 3, 4], 2) == [0, 4]
    assert resolve.spread([0, 1, 2, 3, 4], 1) == [2]
    assert resolve.spread([0, 1, 2], 5) == [0, 1, 2]


@pytest.mark.parametrize("scale", ["mini", "ci"])
def test_overlay_shortens_fpg_and_tta_only_in_depth_and_count(default_params, scale):
    """FPG keeps its first `fpg_stack_times` stacks with mmdet's skip pattern cut to them (every
    level still processed in some stack); TTA keeps `tta_scales` of the paper's scales, evenly
    spread, both flips. full keeps 9 stacks and 5 scales (test_full_configs_carry_the_papers_values)."""
    overlay = default_params["scales"][scale]
    n = overlay["fpg_stack_times"]
    full, ours = (resolved(default_params, "t2_fpg", s).model.neck for s in ("full", scale))
    assert ours.stack_times == n == len(ours.paths) and set(ours.paths) == set(full.paths)
    assert ours.skip_inds == [tuple(i for i in level if i < n) for level in full.skip_inds]
    assert all(len(level) < n for level in ours.skip_inds)
    tta_full = resolved(default_params, "t2_tta", "full").tta_pipeline[1].transforms
    tta = resolved(default_params, "t2_tta", scale).tta_pipeline[1].transforms
    kept = resolve.spread([t.scale for t in tta_full[0]], overlay["tta_scales"])
    assert [t.scale for t in tta[0]] == [resolve._scaled(s, overlay["image_scale"]) for s in kept]
    assert tta[1] == tta_full[1] and kept[0] == (1200, 1200) and kept[-1] == (2000, 2000)


@pytest.mark.parametrize("scale", ["mini", "ci"])
def test_overlay_checkpoints_each_epoch_but_at_most_ten_times(default_params, scale):
    """Checkpoints (weights + optimizer, ~0.6 s each at mini) per scaled epoch, capped at ~10 per
    run: a 45-epoch row at 150 iterations would otherwise save every 3 iterations."""
    for row_id, row in default_params["rows"].items():
        if row["kind"] == "tta":
            continue
        cfg = resolved(default_params, row_id, scale)
        full = resolved(default_params, row_id, "full")
        total, interval = cfg.train_cfg.max_iters, cfg.default_hooks.checkpoint.interval
        assert total // interval <= 10, row_id
        assert interval >= round(total / full.train_cfg.get("max_epochs", 12)), row_id


# ----------------------------------------------------------------------------- ci scale runs


@pytest.mark.slow
@pytest.mark.parametrize("row_id", ["t1_ce", "t1_eql", "t1_seesaw", "t2_mask_rcnn", "t2_syncbn", "t2_carafe",
                                    "t2_htc_lite", "t2_tsd", "t2_mask_scoring", "t2_train_aug", "t2_fpg",
                                    "t2_resnest", "t2_seesaw", "t2_finetune"])
def test_row_builds_trains_one_step_and_infers_at_ci_scale(ci_params, row_id):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import seesaw_lvis.models  # noqa: F401  (registers the plugins)
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    cfg = resolve.load(ci_params, row_id)
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    model.init_weights()
    loader = Runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    losses = model.train_step(batch, optim)
    assert losses and all(math.isfinite(float(v)) for v in losses.values()), losses

    model.eval()
    test_batch = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
    with torch.no_grad():
        out = model.test_step(test_batch)
    pred = out[0].pred_instances
    assert {"bboxes", "scores", "labels", "masks"} <= set(pred.keys())
    assert pred.bboxes.shape[0] <= 300


# ----------------------------------------------------------------------------- pretrained weights


def test_full_rows_start_from_the_weights_the_papers_configs_name(lvis_params):
    """At full each row's backbone loads the local file of its family's pretrain stage, and that
    stage fetches exactly the file the row's own config names (mmengine's hub tables: no URL of
    ours stands in for the paper's)."""
    import json
    import os

    import mmengine
    from mmengine.config import Config

    from seesaw_lvis.params import pretrain_path
    from seesaw_lvis.workflow.stages import backbone_family, pretrain_weights

    hub = {}
    for name in ("torchvision_0.12.json", "openmmlab.json"):
        prefix = "torchvision://" if name.startswith("torchvision") else "open-mmlab://"
        with open(os.path.join(os.path.dirname(mmengine.__file__), "hub", name)) as f:
            table = json.load(f)
        hub.update({prefix + k: v for k, v in table.items()})
    spec = lvis_params["pretrain"]["full"]
    assert set(pretrain_weights(lvis_params)) == {"resnet", "resnest"}
    for row_id, row in lvis_params["rows"].items():
        family = backbone_family(row["config"])
        cfg = resolved(lvis_params, row_id, "full")
        assert cfg.model.backbone.init_cfg == dict(type="Pretrained",
                                                   checkpoint=str(pretrain_path(lvis_params, family))), row_id
        named = Config.fromfile(resolve.row_config_file(row)).model.backbone.init_cfg.checkpoint
        assert named == spec[family]["config_name"], row_id
        assert hub[named] == spec[family]["url"], row_id
        assert spec[family]["url"].rsplit("-", 1)[1].startswith(spec[family]["checksum"].split(":")[1])
    assert backbone_family("t2_09_resnest200_dcn.py") == "resnest" == backbone_family("t2_12_tta.py")
    assert backbone_family("t2_08_fpg_neck.py") == "resnet"


@pytest.mark.parametrize("scale", ["mini", "ci"])
def test_small_scales_keep_the_papers_frozen_stem_and_share_one_backbone_per_family(default_params, scale):
    """Pretrained at mini/ci: frozen_stages and norm_eval as the paper's rows have them; every row
    of a family resolves to the backbone its pretrain stage trains (so the weights load)."""
    from seesaw_lvis.workflow.stages import backbone_family, family_row

    skip = ("init_cfg", "norm_cfg", "norm_eval")  # norm: SyncBN rows (same weights), paper's BN mode
    for row_id, row in default_params["rows"].items():
        cfg, full = resolved(default_params, row_id, scale), resolved(default_params, row_id, "full")
        family = backbone_family(row["config"])
        assert cfg.model.backbone.frozen_stages == full.model.backbone.frozen_stages, row_id
        assert cfg.model.backbone.norm_eval == full.model.backbone.norm_eval, row_id
        assert cfg.model.backbone.init_cfg.checkpoint.endswith(f"/pretrain/{family}/backbone.pth"), row_id
        ref = resolved(default_params, family_row(default_params, family), scale).model.backbone
        assert {k: v for k, v in cfg.model.backbone.items() if k not in skip} == \
            {k: v for k, v in ref.items() if k not in skip}, row_id


def test_eql_protects_the_same_tail_by_image_count_on_every_dataset(default_params, lvis_params):
    """EQL's lambda bounds f = image_count / train images: on LVIS v1 the paper's 1.1e-3 (the
    categories in < ~110 of 100,170 images); on the synthetic set the same image-count bound,
    else a 500-image set protects no category and the row is plain sigmoid CE."""
    full = resolved(lvis_params, "t1_eql", "full").model.roi_head.bbox_head.loss_cls
    assert full.lambda_ == 1.1e-3
    mini = resolved(default_params, "t1_eql", "mini").model.roi_head.bbox_head.loss_cls
    n = default_params["synthetic"]["train_images"]
    assert mini.lambda_ * n == pytest.approx(1.1e-3 * LVIS_V1_TRAIN_IMAGES)
    assert mini.lambda_ * n == pytest.approx(110.2, abs=0.1)  # image count: LVIS's common/frequent bound


def test_eql_classifier_starts_at_the_same_class_share_on_every_dataset(default_params, lvis_params):
    """EQL's sigmoid classifier starts at a prior of 0.001, "roughly 1 / num_classes" for LVIS's
    1203 classes in its authors' code: kept on LVIS v1, the same share of the synthetic set's
    classes (1203 / 40 times higher). The built head's bias says so. Seesaw's row inherits the
    init but is a softmax (a bias shared by every logit changes nothing): left as written."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    def prior(params, row_id, scale):
        (entry,) = [i for i in resolved(params, row_id, scale).model.roi_head.bbox_head.init_cfg
                    if "bias_prob" in i]
        return entry.bias_prob

    n = len(resolve.class_names(default_params))
    assert prior(lvis_params, "t1_eql", "full") == 1e-3
    assert prior(default_params, "t1_eql", "mini") == pytest.approx(1e-3 * 1203 / n)
    assert prior(default_params, "t1_eql", "mini") == pytest.approx(0.030075)  # 40 classes
    assert prior(default_params, "t1_seesaw", "mini") == 1e-3 == prior(lvis_params, "t1_seesaw", "full")
    register_all_modules(init_default_scope=False)
    import seesaw_lvis.models  # noqa: F401  (registers the plugins)

    cfg = copy.deepcopy(resolved(default_params, "t1_eql", "mini").model.roi_head.bbox_head)
    cfg.loss_cls = dict(type="CrossEntropyLoss", use_sigmoid=True)  # EQL reads the stats stage's file
    head = MODELS.build(cfg)
    head.init_weights()
    assert torch.sigmoid(head.fc_cls.bias).mean().item() == pytest.approx(1e-3 * 1203 / n, rel=1e-5)


def test_rfs_repeats_the_same_tail_by_image_count_on_every_dataset(default_params, lvis_params, tmp_path):
    """RFS's t = 1e-3 of LVIS v1's images (r_c > 1 below ~100 images): the finetune row's
    sampler and the stats stage use the same image-count bound on the synthetic set, where
    1e-3 itself would be below every category and repeat nothing."""
    full = resolved(lvis_params, "t2_finetune", "full").train_dataloader.dataset
    assert full.oversample_thr == 1e-3 == lvis_params["stats"]["rfs_threshold"]
    mini = resolved(default_params, "t2_finetune", "mini").train_dataloader.dataset
    n = default_params["synthetic"]["train_images"]
    assert mini.type == "ClassBalancedDataset"
    assert mini.oversample_thr * n == pytest.approx(1e-3 * LVIS_V1_TRAIN_IMAGES)
    t = lvis_v1_fraction_for(default_params, default_params["stats"]["rfs_threshold"])
    assert t == pytest.approx(mini.oversample_thr)
    # on the synthetic categories: the rare ones are repeated, the frequent ones are not
    train = {"images": [{"id": i} for i in range(n)],
             "categories": [{"id": 1, "image_count": 1}, {"id": 2, "image_count": 150}],
             "annotations": [{"id": 1, "image_id": 0, "category_id": 1},
                             *({"id": 2 + i, "image_id": i, "category_id": 2} for i in range(150))]}
    factors = {c["category_id"]: c["repeat_factor"] for c in stats.compute(train, t)["categories"]}
    assert factors[1] == pytest.approx((t * n) ** 0.5) and factors[1] > 10
    assert factors[2] == 1.0

"""The pretraining stage: the backbone weights every detector row starts from.

The paper's rows start from ImageNet-1k backbones (``torchvision://resnet50``,
``open-mmlab://resnest200``) with the stem frozen and BN statistics fixed. This stage is that
initialisation, once per backbone family, cached by DVC and shared by every row:

* ``full``: the ImageNet weights the paper's configs name, fetched with the project's
  resumable, checksummed downloader (``pretrain.full`` in params: URL and published checksum
  per family), so that no training job downloads anything and compute nodes need no internet;
* ``mini`` / ``ci``: a classifier trained here, on a class-balanced set drawn by the synthetic
  generator (:func:`seesaw_lvis.data.synthetic.classification_set`: one object per image,
  labels are its shape, colour and texture, never the detection categories or their long
  tail; its own seed, never the val images). The network is the backbone exactly as the
  family's first row resolves it (depth, widths, DCN), so its weights load into every row of
  the family through mmdet's ``init_cfg=Pretrained``.

Outputs in ``out_dir``: ``backbone.pth`` (``{"state_dict", "meta"}``, the keys of mmdet's
backbone) and ``metrics.json`` (held-out accuracy per attribute, or the download's source).
Training resumes from ``out_dir/work/last.pth`` after a kill, when the spec is unchanged.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import atomic_path, write_json

log = logging.getLogger(__name__)

MEAN = (123.675, 116.28, 103.53)   # the detectors' data_preprocessor (RGB), so features transfer
STD = (58.395, 57.12, 57.375)
HELD_OUT = 1000                    # images of the held-out accuracy (its own seed)


def backbone_config(params: Mapping[str, Any], family: str) -> dict:
    """The family's backbone as its first row resolves it, trainable from scratch, plain BN
    (SyncBN becomes BN outside DDP anyway), and without DCN: the paper's ImageNet ResNeSt-200
    has none either; mmdet starts each DCNv2's offset branch at zero, so the deformable convs
    begin as the pretrained plain convs (their weights load; only the offsets are new)."""
    from seesaw_lvis.configs import resolve
    from seesaw_lvis.workflow.stages import family_row

    cfg = resolve.load(params, family_row(params, family))
    backbone = copy.deepcopy(cfg.model.backbone.to_dict())
    backbone.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    backbone.pop("dcn", None)
    backbone.pop("stage_with_dcn", None)
    if backbone.get("norm_cfg", {}).get("type") == "SyncBN":
        backbone["norm_cfg"] = dict(backbone["norm_cfg"], type="BN")
    return backbone


def _build(backbone_cfg: dict):
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import seesaw_lvis.models  # noqa: F401  (the CPU DCNv2 the ResNeSt rows use)
    from seesaw_lvis.data.synthetic import ATTRIBUTES

    register_all_modules(init_default_scope=False)
    backbone = MODELS.build(copy.deepcopy(backbone_cfg))
    backbone.init_weights()
    backbone.train()
    with torch.no_grad():
        width = backbone(torch.zeros(2, 3, 64, 64))[-1].shape[1]
    heads = torch.nn.ModuleList(torch.nn.Linear(width, len(v)) for v in ATTRIBUTES.values())
    return backbone, heads


def _logits(backbone, heads, x):
    feat = backbone(x)[-1].mean(dim=(2, 3))
    return [h(feat) for h in heads]


def _to_tensor(images, flip: bool = False, gen=None):
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    if flip:
        mask = torch.rand(len(x), generator=gen) < 0.5
        x[mask] = x[mask].flip(-1)
    return x


def accuracy(backbone, heads, images, labels, batch: int = 200) -> dict[str, float]:
    """Top-1 accuracy per attribute on ``images`` (eval mode)."""
    import torch

    from seesaw_lvis.data.synthetic import ATTRIBUTES

    backbone.eval()
    correct = torch.zeros(len(heads))
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out = _logits(backbone, heads, _to_tensor(images[i:i + batch]))
            y = torch.from_numpy(labels[i:i + batch])
            correct += torch.stack([(o.argmax(1) == y[:, k]).sum() for k, o in enumerate(out)]).float()
    backbone.train()
    return {name: float(c) / len(images) for name, c in zip(ATTRIBUTES, correct)}


def _spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_backbone(params: Mapping[str, Any], family: str, out_dir: Path,
                   lineage: Mapping[str, str] | None = None, progress_every: int = 50) -> Path:
    """Pretrain ``family``'s backbone (mini/ci); returns ``out_dir/backbone.pth``."""
    import numpy as np
    import torch

    from seesaw_lvis import compat
    from seesaw_lvis.data.synthetic import classification_set
    from seesaw_lvis.engine import runs, tracking

    compat.install()
    out_dir = Path(out_dir)
    spec = dict(params["pretrain"][params["scale"]][family])
    backbone_cfg = backbone_config(params, family)
    key = {"family": family, "spec": spec, "backbone": backbone_cfg, "seed": params["seed"]}
    run_hash = _spec_hash(key)
    torch.manual_seed(params["seed"])
    gen = torch.Generator().manual_seed(params["seed"])
    backbone, heads = _build(backbone_cfg)
    model = torch.nn.ModuleList([backbone, heads])
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9, weight_decay=1e-4, nesterov=True)
    iters, batch = spec["iters"], spec["batch_size"]
    warmup = max(1, iters // 20)

    def lr_at(it: int) -> float:  # linear warm-up, then cosine to 0 (a standard ImageNet recipe)
        if it < warmup:
            return spec["lr"] * (it + 1) / warmup
        return 0.5 * spec["lr"] * (1 + math.cos(math.pi * (it - warmup) / max(1, iters - warmup)))

    work = out_dir / "work"
    ckpt_path, start = work / "last.pth", 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("run_hash") == run_hash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            gen.set_state(state["gen_rng"])
            start = int(state["iter"])
            log.info("pretrain %s: resuming at iteration %d of %d", family, start, iters)
        else:
            log.warning("pretrain %s: %s is of another spec: training from scratch", family, ckpt_path)
    # The set is drawn from the data seed (+ a fixed offset per use): its own split, not the
    # detection images, and the same for every family.
    t0 = time.time()
    images, labels = classification_set(spec["images"], spec["image_size"], seed=params["seed"] + 1000)
    held_images, held_labels = classification_set(HELD_OUT, spec["image_size"], seed=params["seed"] + 2000)
    log.info("pretrain %s: %d balanced images of %d px drawn in %.1f s; %d iterations of batch %d",
             family, len(images), spec["image_size"], time.time() - t0, iters, batch)

    run = tracking.RunLogger(runs.settings(params), runs.RunIdentity(
        run_key=f"pretrain_{family}/{params['scale']}/{params['dataset']}/{run_hash}",
        run_name=f"pretrain {family} ({params['scale']}, {params['dataset']})",
        experiment=runs.settings(params).experiment,
        tags={"row": f"pretrain_{family}", "kind": "pretrain", "scale": str(params["scale"]),
              "dataset": str(params["dataset"]), "config_hash": run_hash}), work, label=f"pretrain {family}")
    run.start()
    run.log_params(runs.flatten_params({"pretrain": spec, "backbone": backbone_cfg}), conflicts="ignore")
    loss_fn = torch.nn.CrossEntropyLoss()
    order = np.random.default_rng(params["seed"] + 3000).permutation(np.arange(iters * batch) % len(images))
    t0 = time.time()
    for it in range(start, iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        idx = order[it * batch:(it + 1) * batch]
        x = _to_tensor(images[idx], flip=True, gen=gen)
        y = torch.from_numpy(labels[idx])
        loss = sum(loss_fn(o, y[:, k]) for k, o in enumerate(_logits(backbone, heads, x)))
        if not torch.isfinite(loss):
            raise RuntimeError(f"pretrain {family}: non-finite loss at iteration {it + 1}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % progress_every == 0 or it + 1 == iters:
            value = loss.item()
            run.log_metrics({"pretrain_loss": value, "lr": lr_at(it)}, step=it + 1)
            log.info("pretrain %s: iteration %d/%d loss %.3f (%.2f s/iter)", family, it + 1, iters,
                     value, (time.time() - t0) / (it + 1 - start))
        if (it + 1) % max(1, iters // 5) == 0 and it + 1 < iters:  # resumable after a kill
            work.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt_path) as tmp:
                torch.save({"run_hash": run_hash, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "torch_rng": torch.get_rng_state(), "gen_rng": gen.get_state(), "iter": it + 1}, tmp)
    acc = accuracy(backbone, heads, held_images, held_labels)
    log.info("pretrain %s: held-out accuracy %s", family, ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    run.log_metrics({f"pretrain_acc_{k}": v for k, v in acc.items()}, step=iters)
    run.close("FINISHED")
    meta = {"family": family, "source": "pretrained here on seesaw_lvis.data.synthetic.classification_set",
            "held_out_accuracy": acc, "iters": iters, "spec": spec, "run_hash": run_hash,
            **({"lineage": dict(lineage)} if lineage else {})}
    final = out_dir / "backbone.pth"
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:  # a file object: the same bytes for the same weights (see train.py)
            torch.save({"state_dict": backbone.state_dict(), "meta": meta}, f)
    write_json(out_dir / "metrics.json", {k: v for k, v in meta.items() if k != "spec"})
    ckpt_path.unlink(missing_ok=True)
    return final


def fetch_backbone(params: Mapping[str, Any], family: str, out_dir: Path,
                   lineage: Mapping[str, str] | None = None, progress: bool = True) -> Path:
    """``full``: the ImageNet weights the paper's configs name, downloaded (resumable,
    checksum-verified) to ``out_dir/backbone.pth``."""
    from seesaw_lvis.data.download import download

    spec = params["pretrain"]["full"].get(family)
    if spec is None:
        raise ValueError(f"params: key 'pretrain.full.{family}' missing: the URL and checksum of the "
                         f"{family} ImageNet weights")
    out_dir = Path(out_dir)
    final = download(spec["url"], out_dir / "backbone.pth", spec["checksum"], progress=progress)
    write_json(out_dir / "metrics.json", {"family": family, "source": spec["url"], "checksum": spec["checksum"],
                                          "config_name": spec["config_name"],
                                          **({"lineage": dict(lineage)} if lineage else {})})
    return final


def run(params: Mapping[str, Any], family: str, out_dir: Path, lineage: Mapping[str, str] | None = None,
        progress: bool = True) -> Path:
    if params["scale"] == "full":
        return fetch_backbone(params, family, out_dir, lineage, progress)
    return train_backbone(params, family, out_dir, lineage)

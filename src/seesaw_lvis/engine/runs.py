"""Which MLflow run a pipeline job logs into, and what it logs there, within MLflow's limits.

One MLflow run per (row, seed), in the experiment ``tracking.experiment`` (``seesaw_lvis``),
found again by its ``run_key`` tag, ``<row>/<scale>/<dataset>/<config hash>``: re-running or
resuming a row, and its later evaluation, log into the SAME run; a changed config (another
replicate seed among them) makes a new run. Every run is tagged with table, row, seed, title,
scale, dataset, config_hash, git_commit and kind, so ``mlflow ui`` can pivot the rows.
Getting the records to the store is :mod:`seesaw_lvis.engine.tracking`'s job.
"""
from __future__ import annotations

import functools
import os
import posixpath
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from seesaw_lvis.evaluation.lvis_eval import IOU_TYPES, METRIC_KEYS

ENV_URI = "MLFLOW_TRACKING_URI"
DEFAULTS = {"uri": "sqlite:///mlflow.db", "experiment": "seesaw_lvis",
            "artifact_location": "mlartifacts", "retry_interval_s": 60.0}
# MLflow's limits (mlflow.utils.validation), here so that a stricter server cannot surprise us.
MAX_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH = 250, 6000, 8000


@dataclass(frozen=True)
class TrackingSettings:
    uri: str
    experiment: str
    artifact_location: str | None   # None: the server decides
    retry_interval_s: float


def settings(params: Mapping[str, Any], root: str | os.PathLike | None = None) -> TrackingSettings:
    """Tracking URI: ``$MLFLOW_TRACKING_URI``, else ``params.tracking.uri``. A relative SQLite
    path, file store or artifact location is made absolute against ``root`` (default: the working
    directory, the repository root for every stage) so every process and ``mlflow ui`` agree."""
    root = Path(root) if root is not None else Path.cwd()
    conf = {**DEFAULTS, **(params.get("tracking") or {})}
    uri = os.environ.get(ENV_URI) or conf["uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
        uri = "sqlite:///" + str((root / uri[len("sqlite:///"):]).resolve())
    elif "://" not in uri and not uri.startswith(("databricks", "uc")):
        uri = str((root / uri).resolve())
    artifacts = conf["artifact_location"]
    if urlparse(uri).scheme in ("http", "https", "databricks"):
        artifacts = None
    elif artifacts and "://" not in artifacts:
        artifacts = str((root / artifacts).resolve())
    return TrackingSettings(uri, conf["experiment"], artifacts, float(conf["retry_interval_s"]))


def git_commit(root: str | os.PathLike | None = None) -> str:
    """``git rev-parse HEAD`` at ``root``; by default of the working directory, else of this
    package's source (an editable install), else "unknown"."""
    wheres = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).parent]
    for where in wheres:
        if (commit := _git_commit(str(where.resolve()))) != "unknown":
            return commit
    return "unknown"


@functools.lru_cache(maxsize=8)
def _git_commit(root: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else "unknown"


@dataclass(frozen=True)
class RunIdentity:
    """What makes a row's run: its tags, ``run_key`` (the lookup key) among them."""
    run_key: str
    run_name: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_key": self.run_key, "run_name": self.run_name, "experiment": self.experiment,
                "tags": dict(self.tags)}


def run_identity(params: Mapping[str, Any], row_id: str, cfg=None) -> RunIdentity:
    """The run of ``row_id`` at the params' scale and dataset, keyed by the hash of its resolved
    config (``cfg``: the ``resolve.load`` result, loaded when not given; pass that, not the
    config after ``train.build_config``, or training and evaluation would not meet)."""
    from seesaw_lvis.configs import resolve

    row = params["rows"][row_id]
    cfg = resolve.load(params, row_id) if cfg is None else cfg
    chash = resolve.config_hash(cfg)  # the replicate seed is part of it (cfg.randomness)
    seed = cfg.get("randomness", {}).get("seed")
    key = f"{row_id}/{params['scale']}/{params['dataset']}/{chash}"
    commit = git_commit()
    tags = {"table": str(row["table"]), "row": row_id, "seed": str(seed), "title": str(row["title"]),
            "scale": str(params["scale"]), "dataset": str(params["dataset"]), "config_hash": chash,
            "git_commit": commit, "kind": str(row["kind"]), "run_key": key}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    factors = resolve.seesaw_factors_of(cfg)
    if factors is not None:  # every Seesaw run: `mlflow ui` pivots the ablation grid on them
        tags["p"], tags["q"] = (f"{x:g}" for x in factors)
    if row.get("sweep_of"):
        tags["sweep_of"] = row["sweep_of"]
    return RunIdentity(key, f"{row_id} seed {seed} ({params['scale']}, {params['dataset']})",
                       settings(params).experiment, tags)


def row_work_dir(params: Mapping[str, Any], row_id: str, seed: int) -> Path:
    """The (row, seed) run's work directory, where its spool lives (also for tta rows)."""
    from seesaw_lvis.params import run_dir

    return run_dir(params, "train", row_id, seed) / "work"


def _clean_key(key: str) -> str:
    key = re.sub(r"[^/\w.\- :]", "_", str(key))[:MAX_KEY_LENGTH]
    norm = posixpath.normpath(key) if key else ""
    if not key or norm != key or norm == "." or norm.startswith(("..", "/")):
        key = ("_" + key.replace("/", "_"))[:MAX_KEY_LENGTH]
    return key


def _trunc(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten_params(d: Mapping[str, Any], parent: str = "", sep: str = ".") -> dict[str, str]:
    """A config dict as MLflow params: dotted keys (list items of dicts get their index), values
    stringified and truncated to MLflow's limits (mmengine's ``_flatten`` has no limits: a
    1203-class tuple would make MLflow refuse the batch)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            if not node and prefix:
                out[_clean_key(prefix)] = "{}"
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        elif isinstance(node, (list, tuple)) and any(isinstance(x, Mapping) for x in node):
            for i, x in enumerate(node):
                walk(x, f"{prefix}{sep}{i}")
        else:
            out[_clean_key(prefix)] = _trunc(node, MAX_PARAM_VAL_LENGTH)

    walk(d, parent)
    return out


def to_float(value: Any) -> float:
    """A metric value as a float: torch / numpy scalars and 1-element tensors too."""
    return float(value.item() if hasattr(value, "item") else value)


def evaluation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``bbox_AP`` ... ``segm_APf`` from ``{"bbox": {"AP": ..}}``, ``{"lvis/bbox_AP": ..}`` or
    ``{"bbox_AP": ..}``; ``mask`` is read as ``segm``; None values and other keys are skipped."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            flat.update({f"{k}_{kk}": vv for kk, vv in v.items()})
        else:
            flat[str(k).rsplit("/", 1)[-1]] = v
    out: dict[str, float] = {}
    for k, v in flat.items():
        iou, _, name = k.partition("_")
        iou = "segm" if iou == "mask" else iou
        if iou in IOU_TYPES and name in METRIC_KEYS and v is not None:
            out[f"{iou}_{name}"] = to_float(v)
    return out


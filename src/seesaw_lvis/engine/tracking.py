"""MLflow records every table row; an unreachable tracking server never stops or loses a run.

One MLflow run per row, in the experiment ``tracking.experiment`` (``seesaw_lvis``), found
again by its ``run_key`` tag, ``<row>/<scale>/<dataset>/<config hash>``: re-running or resuming
a row, and its later evaluation, log into the SAME run; a changed config makes a new run.
Every run is tagged with table, row, title, scale, dataset, config_hash, git_commit and kind, so
``mlflow ui --backend-store-uri sqlite:///mlflow.db`` can put the rows side by side.

* Training curves go through mmengine's visualizer: :func:`vis_backends` returns the
  ``visualizer.vis_backends`` list (``LocalVisBackend`` + :class:`ResilientMLflowVisBackend`),
  a subclass of mmengine's ``MLflowVisBackend`` that talks to the store through an explicit
  ``MlflowClient`` (no global active run) and never raises because the store is down. Its
  store writes run on one thread per row, in order, so an iteration never waits for MLflow.
* Evaluation metrics and artifacts: :func:`log_evaluation`.
* A spool replayed later: :func:`sync_pending` (``python -m seesaw_lvis track``).

Resilience. Whatever cannot reach the store (server down, HTTP error, SQLite file locked for too
long) is appended to ``<work dir>/mlflow_spool.jsonl`` (JSON lines, fsync'ed) and one warning
names the tracking URI and the spool file. While offline the store is probed at most every
``tracking.retry_interval_s`` seconds (an HTTP server first with a plain TCP connect, so a dead
server costs no MLflow retries); when it answers, and at ``close``, the spool is replayed into
the run. Replay is idempotent: the replayed byte offset is recorded after every batch
(``mlflow_spool.offset``) and the spool is emptied only once all of it is in the store; even a
crash between the two replays only records MLflow already deduplicates (metrics keep their
original timestamp, so a re-sent metric is the same row of the store; params and tags are set to
the same values).

SQLite stores shared by parallel jobs: every store call holds an exclusive ``flock`` on
``<db file>.lock`` (this also serialises MLflow's first-time creation of the tables, which races
otherwise) and is retried with backoff on "database is locked".
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import posixpath
import queue
import random
import re
import socket
import subprocess
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlparse

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import MLflowVisBackend, force_init_env

from seesaw_lvis.evaluation.lvis_eval import IOU_TYPES, METRIC_KEYS
from seesaw_lvis.io import write_json

# MLflow must not phone home from a reproduction pipeline (set before mlflow is imported; a user
# who wants telemetry sets MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

log = logging.getLogger(__name__)

__all__ = ["TrackingSettings", "RunIdentity", "RunLogger", "ResilientMLflowVisBackend",
           "TrackingUnavailableError", "TrackingUnavailableWarning", "settings", "run_identity",
           "vis_backends", "log_evaluation", "sync_pending", "row_work_dir", "flatten_params",
           "SPOOL_NAME"]

ENV_URI = "MLFLOW_TRACKING_URI"
DEFAULTS = {"uri": "sqlite:///mlflow.db", "experiment": "seesaw_lvis",
            "artifact_location": "mlartifacts", "retry_interval_s": 60.0}
SPOOL_NAME = "mlflow_spool.jsonl"        # JSON lines, one record per logging call
OFFSET_NAME = "mlflow_spool.offset"      # {"id": spool id, "offset": bytes already replayed}
LOCK_NAME = "mlflow_spool.lock"          # flock: one writer / replayer of the spool at a time

# MLflow's limits (mlflow.utils.validation), here so that a stricter server cannot surprise us.
MAX_KEY_LENGTH = 250
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

PROBE_TIMEOUT_S = 2.0          # TCP connect to an HTTP tracking server
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",   # a failure spools; no minutes of retries
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
DB_LOCK_TIMEOUT_S = 120.0      # waiting for another process's SQLite transaction (incl. table creation)
LOCKED_RETRIES = 8             # "database is locked" despite the flock (e.g. `mlflow ui` reading)


class TrackingUnavailableError(RuntimeError):
    """The tracking store could not be reached (only :func:`sync_pending` raises it)."""


class TrackingUnavailableWarning(UserWarning):
    """The tracking store is unreachable: records go to the local spool file meanwhile."""


# --------------------------------------------------------------------------------------------
# settings and run identity


@dataclass(frozen=True)
class TrackingSettings:
    uri: str
    experiment: str
    artifact_location: str | None   # None: the (remote) server decides
    retry_interval_s: float


def _resolve_local_uri(uri: str, root: Path) -> str:
    """A relative ``sqlite:///x.db`` / ``file:x`` made absolute against ``root`` so that every
    process (whatever its cwd) and ``mlflow ui`` run from the root use the same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        if rel and rel != ":memory:":
            return "sqlite:///" + str((root / rel).resolve())
    if "://" not in uri and not uri.startswith(("databricks", "uc")):   # a bare path: file store
        return str((root / uri).resolve())
    return uri


def settings(params: Mapping[str, Any], root: str | os.PathLike | None = None) -> TrackingSettings:
    """Tracking URI: ``$MLFLOW_TRACKING_URI``, else ``params.tracking.uri``, else
    ``sqlite:///mlflow.db``. Relative SQLite paths and the artifact location are relative to
    ``root`` (default: the working directory, the repository root for every pipeline stage)."""
    root = Path(root) if root is not None else Path.cwd()
    conf = {**DEFAULTS, **(params.get("tracking") or {})}
    uri = os.environ.get(ENV_URI) or conf["uri"]
    uri = _resolve_local_uri(uri, root)
    artifacts = conf["artifact_location"]
    if urlparse(uri).scheme in ("http", "https", "databricks"):
        artifacts = None                 # a server stores artifacts where it is configured to
    elif artifacts and "://" not in artifacts:
        artifacts = str((root / artifacts).resolve())
    return TrackingSettings(uri=uri, experiment=conf["experiment"], artifact_location=artifacts,
                            retry_interval_s=float(conf["retry_interval_s"]))


def git_commit(root: str | os.PathLike | None = None) -> str:
    """``git rev-parse HEAD`` of the repository at ``root``; by default of the working
    directory, else of this package's source (an editable install), else "unknown"."""
    if root is not None:
        return _git_commit(str(Path(root).resolve()))
    for where in (Path.cwd(), Path(__file__).resolve().parent):
        commit = _git_commit(str(where))
        if commit != "unknown":
            return commit
    return "unknown"


@functools.lru_cache(maxsize=8)
def _git_commit(root: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=False)
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

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunIdentity":
        return cls(run_key=d["run_key"], run_name=d["run_name"], experiment=d["experiment"],
                   tags=dict(d.get("tags") or {}))


def run_identity(params: Mapping[str, Any], row_id: str, cfg=None) -> RunIdentity:
    """The run of ``row_id`` at the params' scale and dataset, keyed by the hash of its resolved
    config (``cfg``: the ``resolve.load`` result, loaded when not given; pass that, not the
    config after ``train.build_config``, or training and evaluation would not meet)."""
    from seesaw_lvis.configs import resolve

    row = params["rows"][row_id]
    if cfg is None:
        cfg = resolve.load(params, row_id)
    chash = resolve.config_hash(cfg)  # the replicate seed is part of it (cfg.randomness)
    seed = cfg.get("randomness", {}).get("seed")
    key = f"{row_id}/{params['scale']}/{params['dataset']}/{chash}"
    commit = git_commit()
    tags = {"table": str(row["table"]), "row": row_id, "seed": str(seed), "title": str(row["title"]),
            "scale": str(params["scale"]), "dataset": str(params["dataset"]), "config_hash": chash,
            "git_commit": commit, "kind": str(row["kind"]), "run_key": key}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return RunIdentity(run_key=key, run_name=f"{row_id} seed {seed} ({params['scale']}, {params['dataset']})",
                       experiment=settings(params).experiment, tags=tags)


def row_work_dir(params: Mapping[str, Any], row_id: str, seed: int) -> Path:
    """The (row, seed) run's work directory (``results/train/<row>/seed<s>/work``, as
    engine/train uses it): its spool lives there, also for evaluation-only (tta) rows."""
    from seesaw_lvis.params import run_dir

    return run_dir(params, "train", row_id, seed) / "work"


# --------------------------------------------------------------------------------------------
# names and values within MLflow's limits


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
    stringified and truncated to MLflow's limits."""
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


def _to_float(value: Any) -> float:
    if hasattr(value, "item"):           # torch / numpy scalars and 1-element tensors
        value = value.item()
    return float(value)


def evaluation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``bbox_AP`` ... ``segm_APf`` from any of: ``{"bbox": {"AP": ..}, "segm": {..}}``
    (``evaluation.lvis_eval``), ``{"lvis/bbox_AP": ..}`` (the mmdet metric), ``{"bbox_AP": ..}``;
    ``mask`` is read as ``segm``. None values are skipped; other keys are ignored."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            for kk, vv in v.items():
                flat[f"{k}_{kk}"] = vv
        else:
            flat[str(k).rsplit("/", 1)[-1]] = v
    out: dict[str, float] = {}
    for k, v in flat.items():
        iou, _, name = k.partition("_")
        iou = "segm" if iou == "mask" else iou
        if iou in IOU_TYPES and name in METRIC_KEYS and v is not None:
            out[f"{iou}_{name}"] = _to_float(v)
    return out


# --------------------------------------------------------------------------------------------
# locks and store calls


@contextlib.contextmanager
def _flock(path: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing), waiting at most ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path}: still locked by another process after {timeout_s:.0f} s")
                time.sleep(delay)
                delay = min(0.2, delay * 1.5)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _http_env() -> Iterator[None]:
    """No minutes of MLflow HTTP retries inside a training loop (unless the user set them)."""
    added = [k for k in HTTP_DEFAULTS if k not in os.environ]
    for k in added:
        os.environ[k] = HTTP_DEFAULTS[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return Path(path) if path and path != ":memory:" else None
    return None


def _probe(uri: str) -> str | None:
    """None when the store looks reachable, else why not (HTTP: a plain TCP connect, no MLflow
    retries; SQLite: the folder of the file must be creatable)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=PROBE_TIMEOUT_S):
                return None
        except OSError as e:
            return f"cannot connect to {parsed.hostname}:{port} ({e.strerror or e})"
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return f"cannot create {db.parent} ({e})"
    return None


# --------------------------------------------------------------------------------------------
# the spool


class Spool:
    """JSON-lines spool of logging calls that did not reach the store.

    The first line is a header ``{"t": "spool", "id": ...}``; ``mlflow_spool.offset`` records
    how many bytes of the spool with that id are in the store already. Appending and replaying
    hold ``mlflow_spool.lock``; emptying replaces the file by a fresh header (new id), so an
    offset file left from before can never skip records of the new spool.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / SPOOL_NAME
        self.offset_path = self.dir / OFFSET_NAME
        self.lock_path = self.dir / LOCK_NAME

    def lock(self):
        return _flock(self.lock_path, DB_LOCK_TIMEOUT_S)

    def _header_id(self) -> str | None:
        try:
            with self.path.open("rb") as f:
                first = f.readline()
        except FileNotFoundError:
            return None
        try:
            head = json.loads(first)
            return head["id"] if head.get("t") == "spool" else ""
        except (ValueError, KeyError, AttributeError):
            return ""

    def append(self, records: Iterable[dict], run_record: dict | None = None) -> str:
        """Append ``records`` (after ``run_record`` when this spool has not seen it yet), fsync'ed.
        Caller holds the lock. Returns the spool id."""
        self.dir.mkdir(parents=True, exist_ok=True)
        sid = self._header_id()
        lines = []
        if not sid:
            sid = uuid.uuid4().hex
            if self.path.exists() and self.path.stat().st_size:   # no valid header: keep the old lines
                os.replace(self.path, self.path.with_suffix(f".corrupt-{int(time.time())}.jsonl"))
            lines.append({"t": "spool", "id": sid, "created": time.time()})
        if run_record is not None and run_record.get("spool") != sid:
            run_record["spool"] = sid
            lines.append({k: v for k, v in run_record.items() if k != "spool"})
        lines.extend(records)
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in lines)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return sid

    def pending(self) -> tuple[str | None, list[tuple[int, dict]]]:
        """(spool id, [(end offset, record)]) of the records not replayed yet. Caller holds the lock."""
        sid = self._header_id()
        if not sid:
            return sid, []
        try:
            done = json.loads(self.offset_path.read_text())
            offset = int(done["offset"]) if done.get("id") == sid else 0
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            offset = 0
        out: list[tuple[int, dict]] = []
        with self.path.open("rb") as f:
            header = f.readline()
            pos = max(offset, len(header))
            f.seek(pos)
            for line in f:
                if not line.endswith(b"\n"):   # a write cut short by a crash: never completed
                    break
                pos += len(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    log.warning("%s: skipping a malformed line at byte %d", self.path, pos - len(line))
                    continue
                out.append((pos, record))
        return sid, out

    def mark(self, sid: str, offset: int) -> None:
        write_json(self.offset_path, {"id": sid, "offset": offset})

    def reset(self) -> None:
        """Empty the spool (everything in it is in the store). Caller holds the lock."""
        from seesaw_lvis.io import write_text

        write_text(self.path, json.dumps({"t": "spool", "id": uuid.uuid4().hex, "created": time.time()}) + "\n")
        self.offset_path.unlink(missing_ok=True)

    def has_pending(self) -> bool:
        if not self.path.exists():
            return False
        with self.lock():
            return bool(self.pending()[1])


# --------------------------------------------------------------------------------------------
# one row's run


class RunLogger:
    """Logs into one row's MLflow run, or into the spool while the store is unreachable.

    No method raises because the store is down (``sync`` returns None instead).
    """

    def __init__(self, tracking: TrackingSettings, identity: RunIdentity, spool_dir: str | os.PathLike,
                 label: str | None = None):
        self.settings = tracking
        self.uri = tracking.uri
        self.identity = identity
        self.spool = Spool(spool_dir)
        self.label = label or identity.tags.get("row", identity.run_key)
        self.run_id: str | None = None
        self.online = False
        self._client = None
        self._client_uri: str | None = None
        self._experiment_ids: dict[str, str] = {}
        self._run_ids: dict[str, str] = {}
        self._last_probe = float("-inf")
        self._warned = False
        self._run_record = {"t": "run", "run_key": identity.run_key, "identity": identity.to_json()}
        self._param_conflicts: set[str] = set()

    # -- the store ------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None or self._client_uri != self.uri:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            self._client_uri = self.uri
            self._experiment_ids.clear()
            self._run_ids.clear()
        return self._client

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` under the SQLite file lock, retried on "database is locked"."""
        db = _sqlite_path(self.uri)
        lock = _flock(db.with_name(db.name + ".lock"), DB_LOCK_TIMEOUT_S) if db else contextlib.nullcontext()
        with _http_env(), lock:
            for attempt in range(LOCKED_RETRIES + 1):
                try:
                    return fn(self.client)
                except Exception as e:  # noqa: BLE001 - classified below, re-raised otherwise
                    if not _is_locked(e) or attempt == LOCKED_RETRIES:
                        raise
                    time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))

    def _experiment_id(self, client, name: str) -> str:
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = client.create_experiment(name, artifact_location=self.settings.artifact_location)
            except MlflowException:          # created meanwhile by another process
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp_id)
        self._experiment_ids[name] = exp_id
        return exp_id

    def _find_or_create(self, client, identity: RunIdentity) -> str:
        """The run tagged ``run_key`` (the oldest if a race made two), created if missing."""
        if identity.run_key in self._run_ids:
            return self._run_ids[identity.run_key]
        from mlflow.entities import RunTag, ViewType

        exp_id = self._experiment_id(client, identity.experiment)
        found = client.search_runs([exp_id], filter_string=f"tags.run_key = '{identity.run_key}'",
                                   run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
                                   order_by=["attributes.start_time ASC"])
        tags = {k: _trunc(v, MAX_TAG_VAL_LENGTH) for k, v in identity.tags.items()}
        tags.setdefault("run_key", identity.run_key)
        if found:
            run_id = found[0].info.run_id
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])   # e.g. a new commit
        else:
            run_id = client.create_run(exp_id, run_name=identity.run_name, tags=tags).info.run_id
            log.info("MLflow: new run %s for %s in %s", run_id, identity.run_key, self.uri)
        self._run_ids[identity.run_key] = run_id
        return run_id

    def use_store(self, uri: str, artifact_location: str | None = None) -> None:
        """Point this logger at another tracking store (e.g. the server moved); the next call
        probes it at once and replays the spool there."""
        self.settings = TrackingSettings(uri, self.settings.experiment, artifact_location,
                                         self.settings.retry_interval_s)
        self.uri = uri
        self.online = False
        self.run_id = None
        self._last_probe = float("-inf")

    # -- online / offline -------------------------------------------------------------------

    def start(self) -> bool:
        """Connect (find or create the run), replaying any spool left from before."""
        return self._try_connect(force=True)

    def _try_connect(self, force: bool = False) -> bool:
        if self.online:
            return True
        now = time.monotonic()
        if not force and now - self._last_probe < self.settings.retry_interval_s:
            return False
        self._last_probe = now
        why = _probe(self.uri)
        if why is None:
            try:
                self.run_id = self._call(lambda c: self._find_or_create(c, self.identity))
            except Exception as e:  # noqa: BLE001
                why = f"{type(e).__name__}: {_short(e)}"
        if why is not None:
            self._go_offline(why)
            return False
        if self.sync() is None:            # replay failed: still offline (warned there)
            return False
        self.online = True
        if self._warned:
            _warn(f"MLflow tracking store {self.uri} is reachable again; the spool "
                  f"{self.spool.path} has been replayed into run {self.run_id} ({self.label}).",
                  level=logging.INFO)
            self._warned = False
        return True

    def _go_offline(self, why: str) -> None:
        was_online = self.online
        self.online = False
        self._last_probe = time.monotonic()
        if self._warned and not was_online:
            return
        self._warned = True
        _warn(f"MLflow tracking store {self.uri} is unreachable or failing ({why}). {self.label} "
              f"continues: everything it logs is appended to {self.spool.path} and replayed into its "
              f"run when the store answers again (checked at most every "
              f"{self.settings.retry_interval_s:g} s), at the end of the run, or with "
              f"`python -m seesaw_lvis track --params <params> --row {self.identity.tags.get('row', '<row>')}`.")

    def _spool(self, records: list[dict]) -> None:
        try:
            with self.spool.lock():
                self.spool.append([{**r, "run_key": self.identity.run_key} for r in records],
                                  self._run_record)
        except Exception as e:  # noqa: BLE001 - the disk itself failed: say so, never stop training
            log.error("cannot write the MLflow spool %s (%s): %d record(s) lost", self.spool.path, e,
                      len(records))

    def _log(self, records: list[dict]) -> bool:
        """Send ``records`` to the run, or spool them. True when they reached the store."""
        if not self.online:
            self._try_connect()
        if self.online:
            try:
                run_id = self.run_id
                self._call(lambda c: self._apply(c, run_id, records))
                return True
            except Exception as e:  # noqa: BLE001
                self._go_offline(f"{type(e).__name__}: {_short(e)}")
        self._spool(records)   # replayed, in order, by the next successful probe or close()
        return False

    # -- records ------------------------------------------------------------------------------

    def _apply(self, client, run_id: str, records: list[dict], conflicts: str = "warn") -> None:
        """Send records to ``run_id`` (batched within MLflow's limits)."""
        from mlflow.entities import Metric, RunTag

        metrics: list = []

        def flush() -> None:
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            metrics.clear()

        for r in records:
            t = r["t"]
            if t == "metrics":
                metrics.extend(Metric(_clean_key(k), float(v), int(r["ts"]), int(r["step"]))
                               for k, v in r["values"].items())
                continue
            flush()
            if t == "params":
                self._log_params(client, run_id, r["params"], r.get("conflicts", conflicts))
            elif t == "tags":
                tags = [RunTag(_clean_key(k), _trunc(v, MAX_TAG_VAL_LENGTH)) for k, v in r["tags"].items()]
                for i in range(0, len(tags), MAX_PARAMS_PER_BATCH):
                    client.log_batch(run_id, tags=tags[i:i + MAX_PARAMS_PER_BATCH])
            elif t == "text":
                client.log_text(run_id, r["text"], r["file"])
            elif t == "artifact":
                path = Path(r["path"])
                if path.is_file():
                    client.log_artifact(run_id, str(path), r.get("artifact_path") or None)
                else:
                    log.warning("MLflow: artifact %s no longer exists; not logged to %s", path, run_id)
            elif t == "status":
                if r["status"] == "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                else:
                    client.set_terminated(run_id, r["status"], end_time=int(r.get("ts") or time.time() * 1000))
            elif t in ("run", "spool"):
                pass
            else:
                log.warning("MLflow: unknown spool record type %r ignored", t)
        flush()

    def _log_params(self, client, run_id: str, params: Mapping[str, str], conflicts: str) -> None:
        """Log the params the run lacks; MLflow refuses to change one: a changed value (e.g.
        ``load_from`` on resume) is kept as first logged and, with ``conflicts="warn"``, named."""
        from mlflow.entities import Param

        have = client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in have]
        changed = sorted(k for k, v in params.items() if k in have and have[k] != v)
        for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=new[i:i + MAX_PARAMS_PER_BATCH])
        changed = [k for k in changed if k not in self._param_conflicts]
        if changed and conflicts == "warn":
            self._param_conflicts.update(changed)
            log.warning("MLflow run %s keeps its first value of %d param(s) that changed since "
                        "(MLflow cannot change a param): %s", run_id, len(changed), ", ".join(changed[:20]))

    # -- the public API ---------------------------------------------------------------------------

    def log_metrics(self, values: Mapping[str, Any], step: int, timestamp_ms: int | None = None) -> bool:
        vals = {}
        for k, v in values.items():
            try:
                vals[str(k)] = _to_float(v)
            except (TypeError, ValueError):
                continue                    # not a scalar (mmengine may pass strings): skip
        if not vals:
            return True
        ts = int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)
        return self._log([{"t": "metrics", "step": int(step), "ts": ts, "values": vals}])

    def log_params(self, params: Mapping[str, Any], conflicts: str = "warn") -> bool:
        flat = {_clean_key(k): _trunc(v, MAX_PARAM_VAL_LENGTH) for k, v in params.items()}
        return self._log([{"t": "params", "params": flat, "conflicts": conflicts}])

    def set_tags(self, tags: Mapping[str, Any]) -> bool:
        return self._log([{"t": "tags", "tags": {str(k): str(v) for k, v in tags.items()}}])

    def log_text(self, text: str, artifact_file: str) -> bool:
        return self._log([{"t": "text", "text": text, "file": artifact_file}])

    def log_artifacts(self, files: Iterable[tuple[str | os.PathLike, str | None]]) -> bool:
        records = [{"t": "artifact", "path": str(Path(p).resolve()), "artifact_path": a} for p, a in files]
        return self._log(records) if records else True

    def set_status(self, status: str) -> bool:
        return self._log([{"t": "status", "status": status, "ts": int(time.time() * 1000)}])

    def sync(self) -> int | None:
        """Replay the spool into the store: the number of records replayed, None on failure
        (nothing is dropped then; the replayed part is recorded and not sent again)."""
        if not self.spool.path.exists():
            return 0
        try:
            with self.spool.lock():
                sid, pending = self.spool.pending()
                if not pending:
                    return 0
                why = _probe(self.uri)
                if why is not None:
                    self._go_offline(why)
                    return None
                identities = {self.identity.run_key: self.identity}
                done = 0
                i = 0
                while i < len(pending):
                    # a batch: consecutive records of one run, at most MAX_METRICS_PER_BATCH metrics
                    key = pending[i][1].get("run_key", self.identity.run_key)
                    batch, n_metrics = [], 0
                    while i < len(pending):
                        end, rec = pending[i]
                        if rec.get("t") == "run":
                            identities[rec["run_key"]] = RunIdentity.from_json(rec["identity"])
                        if rec.get("run_key", key) != key:
                            break
                        n_metrics += len(rec.get("values", ()))
                        batch.append(rec)
                        i += 1
                        if n_metrics >= MAX_METRICS_PER_BATCH or rec.get("t") != "metrics":
                            break
                    ident = identities.get(key) or RunIdentity(key, key.split("/")[0], self.identity.experiment,
                                                               {"run_key": key})

                    def send(c, ident=ident, batch=batch):
                        run_id = self._find_or_create(c, ident)
                        self._apply(c, run_id, batch, conflicts="ignore")

                    self._call(send)
                    self.spool.mark(sid, pending[i - 1][0])
                    done += len(batch)
                self.spool.reset()
                if done:
                    log.info("MLflow: replayed %d spooled record(s) from %s into %s", done, self.spool.path, self.uri)
                return done
        except Exception as e:  # noqa: BLE001
            self._go_offline(f"replaying {self.spool.path} failed: {type(e).__name__}: {_short(e)}")
            return None

    def close(self, status: str | None = "FINISHED") -> bool:
        """Final replay and run status. True when nothing is left in the spool."""
        if status:
            self.set_status(status)
        if not self.online:
            self._try_connect(force=True)
        elif self.spool.path.exists():
            self.sync()
        left = self.spool.has_pending() if self.spool.path.exists() else False
        if left:
            _warn(f"MLflow tracking store {self.uri} unreachable at the end of {self.label}: its records "
                  f"stay in {self.spool.path}; replay them with `python -m seesaw_lvis track --params "
                  f"<params> --row {self.identity.tags.get('row', '<row>')}`.")
        return not left


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _warn(message: str, level: int = logging.WARNING) -> None:
    """To Python's warnings (stderr, pytest) and to the current mmengine logger (the row's
    training log) when one exists, else to the package logger."""
    if level >= logging.WARNING:
        warnings.warn(message, TrackingUnavailableWarning, stacklevel=3)
    try:
        from mmengine.logging import MMLogger

        if MMLogger._instance_dict:          # inside an mmengine run: into the row's log file
            MMLogger.get_current_instance().log(level, message)
            return
    except Exception:  # noqa: BLE001
        pass
    log.log(level, message)


# --------------------------------------------------------------------------------------------
# the logging thread


class _Worker:
    """One thread that runs a row's logging calls in submission order, off the training loop.

    A store write (SQLite transaction under a file lock, or an HTTP request) costs milliseconds
    to seconds; the training iteration only enqueues. The calls themselves never raise for an
    unreachable store (RunLogger spools then); anything else is logged, never lost silently.
    The thread is a daemon so a crashed run cannot hang at exit, and an ``atexit`` hook drains
    the queue first, so a run that ends by an exception (a NaN loss, a bug) still logs what it
    queued. Only a SIGKILL loses the calls still queued (a few milliseconds' worth): the same
    window as a synchronous write interrupted mid-transaction.
    """

    _STOP = object()

    def __init__(self, name: str):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._atexit = self.stop
        atexit.register(self._atexit)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                fn, args, kwargs = item
                try:
                    fn(*args, **kwargs)
                except Exception:  # noqa: BLE001 - a logging bug must not kill the thread
                    log.exception("MLflow logging call %s failed", getattr(fn, "__name__", fn))
            finally:
                self._queue.task_done()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not self._thread.is_alive():          # stopped: run in the caller (nothing is dropped)
            fn(*args, **kwargs)
            return
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        if self._thread.is_alive():
            self._queue.join()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        atexit.unregister(self._atexit)


# --------------------------------------------------------------------------------------------
# mmengine vis backend


@VISBACKENDS.register_module(force=True)
class ResilientMLflowVisBackend(MLflowVisBackend):
    """mmengine's ``MLflowVisBackend`` with one run per row (found again by ``run_key``) and a
    local spool while the tracking store is unreachable: training never stops for MLflow.

    Extra args: ``run_key`` (tag the run is looked up by; default from ``tags``),
    ``spool_dir`` (the row's work dir; default ``save_dir``), ``retry_interval_s``.
    ``experiment`` returns the :class:`RunLogger` (its ``client`` and ``run_id``).
    """

    def __init__(self, save_dir: str, exp_name: str | None = None, run_name: str | None = None,
                 tags: dict | None = None, params: dict | None = None, tracking_uri: str | None = None,
                 artifact_suffix=(".json", ".log", ".py", "yaml"), tracked_config_keys: dict | None = None,
                 artifact_location: str | None = None, run_key: str | None = None,
                 spool_dir: str | None = None, retry_interval_s: float = DEFAULTS["retry_interval_s"]):
        super().__init__(save_dir, exp_name, run_name, tags, params, tracking_uri, artifact_suffix,
                         tracked_config_keys, artifact_location)
        self._spool_dir = spool_dir
        self._run_key = run_key or (tags or {}).get("run_key")
        self._retry_interval_s = float(retry_interval_s)
        self._logger: RunLogger | None = None
        self._worker: _Worker | None = None
        self.cfg = None

    def _make_logger(self) -> RunLogger:
        tags = dict(self._tags or {})
        key = self._run_key or f"{self._run_name or 'run'}"
        tags.setdefault("run_key", key)
        tracking = TrackingSettings(uri=self._tracking_uri or DEFAULTS["uri"],
                                    experiment=self._exp_name or DEFAULTS["experiment"],
                                    artifact_location=self._artifact_location,
                                    retry_interval_s=self._retry_interval_s)
        ident = RunIdentity(run_key=key, run_name=self._run_name or key, experiment=tracking.experiment,
                            tags=tags)
        return RunLogger(tracking, ident, self._spool_dir or self._save_dir,
                         label=f"row {tags.get('row', key)}")

    def _init_env(self) -> None:
        if self._save_dir:
            os.makedirs(self._save_dir, exist_ok=True)
        self._logger = logger = self._make_logger()
        # Connect on the calling thread, before the training loop forks its dataloader workers.
        # Importing MLflow and opening its store run subprocesses (`uname`, for mlflow.telemetry's
        # platform record). Started on the logging thread while the main thread forks a worker,
        # the subprocess's stdout pipe leaks into that worker, and communicate() waits for an EOF
        # that comes only when the worker exits. The run then hangs in close() (seen in the demo:
        # 4 min once, for good another time). Later calls on the thread only write to the store.
        if logger.start():
            logger.set_status("RUNNING")
        self._worker = _Worker(f"mlflow-{logger.label}")
        if self._params:
            self._worker.submit(logger.log_params, flatten_params(self._params))

    def flush(self) -> None:
        """Wait until everything logged so far has reached the store or the spool."""
        if self._worker is not None:
            self._worker.flush()

    @property  # type: ignore[override]
    @force_init_env
    def experiment(self) -> RunLogger:
        self.flush()               # the caller sees the logger's state after every queued call
        return self._logger

    @force_init_env
    def add_config(self, config, **kwargs) -> None:
        self.cfg = config
        d = config.to_dict()
        if self._tracked_config_keys is not None:
            d = {k: d[k] for k in self._tracked_config_keys if k in d}
        self._worker.submit(self._logger.log_params, flatten_params(d), conflicts="warn")
        self._worker.submit(self._logger.log_text, config.pretty_text, "config.py")

    @force_init_env
    def add_image(self, name: str, image, step: int = 0, **kwargs) -> None:
        """Saved under ``<save_dir>/mlflow_images/`` and logged as an artifact (spooled by path)."""
        try:
            from PIL import Image

            out = Path(self._spool_dir or self._save_dir) / "mlflow_images" / f"{_clean_key(name).replace('/', '_')}_{step}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out)
            self._worker.submit(self._logger.log_artifacts, [(out, "images")])
        except Exception as e:  # noqa: BLE001 - an image is never worth a failed run
            log.warning("MLflow: image %s not logged (%s)", name, e)

    @force_init_env
    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: str | None = None, **kwargs) -> None:
        assert isinstance(scalar_dict, dict)
        assert "step" not in scalar_dict, "Please set it directly through the step parameter"
        # the values and the time are taken now; the store write happens on the worker thread
        self._worker.submit(self._logger.log_metrics, dict(scalar_dict), step, int(time.time() * 1000))

    def close(self) -> None:
        """Artifacts of the work dir (config, logs, scalar JSON), final replay, run FINISHED."""
        if self._worker is not None:
            # everything queued reaches the store (or the spool) first; later calls (the
            # visualizer is a process-wide instance) run synchronously
            self._worker.stop()
        if self._logger is None:
            # never used in this process (e.g. a non-zero DDP rank): only the main process replays
            # a spool left from an earlier attempt
            try:
                from mmengine.dist import is_main_process

                main = is_main_process()
            except Exception:  # noqa: BLE001
                main = True
            if main and Spool(self._spool_dir or self._save_dir).has_pending():
                self._make_logger().sync()
            return
        work_dir = (self.cfg.get("work_dir") if self.cfg is not None else None) or self._spool_dir
        if work_dir and os.path.isdir(work_dir):
            from mmengine.utils import scandir

            files = []
            for name in sorted(scandir(work_dir, self._artifact_suffix, True)):
                path = Path(work_dir) / name
                if path.name.startswith(("mlflow_spool", ".")):
                    continue
                files.append((path, os.path.dirname(name) or None))
            self._logger.log_artifacts(files)
        self._logger.close("FINISHED")


# --------------------------------------------------------------------------------------------
# the pipeline's entry points


def vis_backends(params: Mapping[str, Any], row_id: str, work_dir: str | os.PathLike,
                 cfg=None) -> list[dict]:
    """``visualizer.vis_backends`` for ``row_id``'s training config: mmengine's local JSON
    scalars and the row's MLflow run (spool in ``work_dir``); ``cfg`` as for
    :func:`run_identity`."""
    tracking = settings(params)
    ident = run_identity(params, row_id, cfg)
    return [
        dict(type="LocalVisBackend"),
        dict(type="ResilientMLflowVisBackend", exp_name=tracking.experiment, run_name=ident.run_name,
             tags=dict(ident.tags), run_key=ident.run_key, tracking_uri=tracking.uri,
             artifact_location=tracking.artifact_location, spool_dir=str(Path(work_dir).resolve()),
             retry_interval_s=tracking.retry_interval_s),
    ]


def row_logger(params: Mapping[str, Any], row_id: str, work_dir: str | os.PathLike | None = None,
               cfg=None) -> RunLogger:
    """A :class:`RunLogger` for ``row_id`` with ``cfg`` (spool in ``work_dir``, default the
    work dir of the run's seed)."""
    spool_dir = Path(work_dir) if work_dir is not None else row_work_dir(params, row_id, cfg.randomness.seed)
    return RunLogger(settings(params), run_identity(params, row_id, cfg), spool_dir, label=f"row {row_id}")


def log_evaluation(params: Mapping[str, Any], row_id: str, metrics: Mapping[str, Any],
                   artifacts: Iterable[str | os.PathLike] = (), work_dir: str | os.PathLike | None = None,
                   seed: int | None = None) -> bool:
    """Log a row's evaluation into its run: ``bbox_*`` / ``segm_*`` AP, AP50, AP75, APs, APm,
    APl, APr, APc, APf (see :func:`evaluation_metrics`) and ``artifacts`` (resolved config,
    metrics JSON, log file) under ``evaluation/``. Also fills in the resolved config's params
    the run lacks (tta rows never train). Never raises because the store is down: warns and
    spools to ``work_dir`` (default the row's work dir). True when everything reached the store."""
    from seesaw_lvis.configs import resolve

    cfg = resolve.load(params, row_id, seed=seed)
    logger = row_logger(params, row_id, work_dir, cfg)
    logger.start()
    values = evaluation_metrics(metrics)
    ok = logger.log_params(flatten_params(cfg.to_dict()), conflicts="ignore")
    ok &= logger.log_metrics(values, step=0)
    files = [(Path(a), "evaluation") for a in artifacts if Path(a).is_file()]
    for a in artifacts:
        if not Path(a).is_file():
            log.warning("MLflow: evaluation artifact %s not found; not logged", a)
    ok &= logger.log_artifacts(files)
    ok &= logger.close("FINISHED")
    return bool(ok)


def sync_pending(work_dir: str | os.PathLike | None, params: Mapping[str, Any], row_id: str,
                 seed: int = 0) -> int:
    """Replay the spool of ``row_id`` (in ``work_dir``, default the row's work dir) into the
    tracking store now; returns the number of records replayed (0: nothing was pending).
    Raises :class:`TrackingUnavailableError` when the store still cannot be reached."""
    spool_dir = Path(work_dir) if work_dir is not None else row_work_dir(params, row_id, seed)
    tracking = settings(params)
    spool = Spool(spool_dir)
    if not spool.has_pending():
        return 0
    # the run identities come from the spool itself; this one is only the fallback
    ident = RunIdentity(run_key=f"{row_id}/{params['scale']}/{params['dataset']}/unknown", run_name=row_id,
                        experiment=tracking.experiment, tags={"row": row_id})
    logger = RunLogger(tracking, ident, spool_dir, label=f"row {row_id}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingUnavailableWarning)
        done = logger.sync()
    if done is None:
        raise TrackingUnavailableError(f"MLflow tracking store {tracking.uri} unreachable; "
                                       f"{spool.path} kept for a later replay")
    return done

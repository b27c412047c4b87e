"""Gets a run's records to MLflow; a tracking store that is down never stops or loses a run.

Training curves go through :mod:`seesaw_lvis.engine.mlflow_vis` (mmengine's MLflow vis backend)
into a :class:`RunLogger`, which sends metrics with MLflow's own asynchronous logging
(``log_batch(synchronous=False)``: MLflow's queue and threads; an iteration never waits for the
store); evaluation (``engine.evaluate``) and pretraining use a RunLogger directly.

Nothing is lost. A call that fails (server down, HTTP error, a SQLite lock held past MLflow's
20 s busy timeout), at once when synchronous, when its future completes when asynchronous, is
appended to ``<work dir>/mlflow_spool.jsonl`` (JSON lines, fsync'ed); one warning names the URI
and the spool. While offline, records go to the spool and the store is probed at most every
``tracking.retry_interval_s`` (a TCP connect for a server). When it answers, at ``close`` and
by ``python -m seesaw_lvis track``, the spool is replayed, then deleted. Replay is idempotent, so
a crash between the two stores nothing twice: MLflow drops a metric it has (same key, step,
timestamp, value), params the run has are skipped, status and artifacts are written again.

SQLite, the laptop default: connecting (MLflow creates its tables then, racing other processes)
and replaying hold an ``flock`` on ``<db>.lock``. A cluster's jobs log to a tracking server
(``scripts/mlflow-server.sh``): file locks on shared filesystems are unreliable.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import urlparse

from seesaw_lvis.engine.runs import (MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH, RunIdentity, TrackingSettings,
                                     _clean_key, _trunc, row_work_dir, settings, to_float)

# No telemetry from a reproduction pipeline; a failed request is spooled and replayed, so no
# minutes of MLflow's HTTP retries either (set before mlflow is imported; the user's values win).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# With buffering, MLflow merges queued batches and a failed merge fails only the first one's future:
# the others report success and their records would be lost unspooled (mlflow 3.17 RunBatch.complete).
os.environ.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)

log = logging.getLogger(__name__)

SPOOL_NAME = "mlflow_spool.jsonl"
MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH = 100, 1000   # MLflow's log_batch limits
LOCK_TIMEOUT_S = 120.0   # another process's table creation or replay


class TrackingUnavailableError(RuntimeError):
    """The tracking store could not be reached (only :func:`sync_pending` raises it)."""


class TrackingUnavailableWarning(UserWarning):
    """The tracking store is unreachable: records go to the spool meanwhile."""


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing), waiting at most LOCK_TIMEOUT_S."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(int(LOCK_TIMEOUT_S / 0.05)):
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{path}: still locked by another process after {LOCK_TIMEOUT_S:.0f} s")
        yield
    finally:
        os.close(fd)   # releases the lock


def _store_lock(uri: str):
    """The SQLite store's file lock (nothing for a server)."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return _flock(Path(uri[len("sqlite:///"):] + ".lock"))
    return contextlib.nullcontext()


def _probe(uri: str) -> str | None:
    """None when a tracking server accepts a TCP connection (no MLflow retries), else why not."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=2.0):
            return None
    except OSError as e:
        return f"cannot connect to {parsed.hostname}:{port} ({e.strerror or e})"


def _why(e: BaseException, limit: int = 300) -> str:
    text = f"{type(e).__name__}: " + " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _warn(message: str, level: int = logging.WARNING) -> None:
    """To Python's warnings and to the current mmengine logger (the row's log file) if any."""
    if level >= logging.WARNING:
        warnings.warn(message, TrackingUnavailableWarning, stacklevel=3)
    from mmengine.logging import MMLogger

    (MMLogger.get_current_instance() if MMLogger._instance_dict else log).log(level, message)


class Spool:
    """The records that did not reach the store, as JSON lines; appends and replays hold an
    ``flock`` on the spool so that the training job and a ``track`` replay never interleave."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / SPOOL_NAME

    def lock(self):
        return _flock(self.path.with_suffix(".lock"))

    def append(self, records: Iterable[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records).encode()
        with self.path.open("ab+") as f:
            if f.tell():   # after a line a crash cut short, start a new line: that one is dropped alone
                f.seek(-1, os.SEEK_END)
                data = data if f.read(1) == b"\n" else b"\n" + data
            f.write(data)  # O_APPEND: at the end, wherever the read left the position
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        records = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
            try:
                if line.endswith("\n"):       # else: a write cut short by a crash, never completed
                    records.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipping malformed line %d", self.path, n)
        return records

    def has_pending(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0


class RunLogger:
    """Logs into one row's MLflow run, or into the spool while the store is unreachable. No
    method raises because the store is down; ``sync`` returns None then."""

    def __init__(self, tracking: TrackingSettings, identity: RunIdentity, spool_dir: str | os.PathLike,
                 label: str | None = None):
        self.settings, self.uri, self.identity = tracking, tracking.uri, identity
        self.spool = Spool(spool_dir)
        self.label = label or identity.tags.get("row", identity.run_key)
        self.run_id, self.online = None, False   # the run's id once connected
        self._client = None
        self._run_ids: dict[str, str] = {}
        self._last_probe = float("-inf")
        self._warned = False
        self._in_flight: list[tuple[Any, dict]] = []   # (MLflow's RunOperations, record)
        self._conflicts: set[str] = set()
        self._ident_spooled = False
        self._unspooled: list[dict] = []   # records the spool's lock kept out so far

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _find_or_create(self, identity: RunIdentity) -> str:
        """The run tagged ``run_key`` (the oldest, if a race made two), created if missing."""
        if identity.run_key in self._run_ids:
            return self._run_ids[identity.run_key]
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        c = self.client
        exp = c.get_experiment_by_name(identity.experiment)
        if exp is None:
            try:
                exp_id = c.create_experiment(identity.experiment, artifact_location=self.settings.artifact_location)
            except MlflowException:          # created meanwhile by another process
                exp_id = c.get_experiment_by_name(identity.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp_id)
        found = c.search_runs([exp_id], filter_string=f"tags.run_key = '{identity.run_key}'", max_results=1,
                              order_by=["attributes.start_time ASC"])
        tags = {**{k: _trunc(v, MAX_TAG_VAL_LENGTH) for k, v in identity.tags.items()}, "run_key": identity.run_key}
        if found:
            run_id = found[0].info.run_id
            c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])   # e.g. a new commit
        else:
            run_id = c.create_run(exp_id, run_name=identity.run_name, tags=tags).info.run_id
            log.info("MLflow: new run %s for %s in %s", run_id, identity.run_key, self.uri)
        self._run_ids[identity.run_key] = run_id
        return run_id

    def start(self) -> bool:
        """Connect (find or create the run) and replay any spool left from before."""
        return self._connect(force=True)

    def _connect(self, force: bool = False) -> bool:
        if self.online:
            return True
        if not force and time.monotonic() - self._last_probe < self.settings.retry_interval_s:
            return False
        self._last_probe = time.monotonic()
        why = _probe(self.uri)
        if why is None:
            try:
                with _store_lock(self.uri):
                    self.run_id = self._find_or_create(self.identity)
            except Exception as e:  # noqa: BLE001 - any failure of the store: go offline
                why = _why(e)
        if why is not None:
            self._offline(why)
            return False
        self.online = True
        if self.sync() is None:            # replay failed: offline again (warned there)
            return False
        if self._warned:
            _warn(f"MLflow tracking store {self.uri} answers again; {self.spool.path} is replayed into "
                  f"run {self.run_id} ({self.label}).", logging.INFO)
            self._warned = False
        return True

    def _offline(self, why: str) -> None:
        self.online = False
        self._last_probe = time.monotonic()
        if not self._warned:
            self._warned = True
            _warn(f"MLflow tracking store {self.uri} is unreachable or failing ({why}). {self.label} "
                  f"continues: what it logs goes to {self.spool.path}, replayed into its run when the store "
                  f"answers (probed at most every {self.settings.retry_interval_s:g} s), at the end of the "
                  f"run, or by `python -m seesaw_lvis track --params <params> --row {self.identity.tags.get('row', '<row>')}`.")

    def _spool(self, records: list[dict]) -> None:
        key, records, self._unspooled = self.identity.run_key, [*self._unspooled, *records], []
        try:
            with self.spool.lock():   # the run's identity first, so that a replay elsewhere finds the run
                known = self._ident_spooled and self.spool.has_pending()
                ident = [] if known else [{"t": "run", "run_key": key, "identity": self.identity.to_json()}]
                self.spool.append([*ident, *({**r, "run_key": key} for r in records)])
                self._ident_spooled = True
        except TimeoutError:   # a replay elsewhere holds the spool: kept for the next write or close
            self._unspooled = records
        except OSError as e:   # the disk itself failed: say so, never stop training
            log.error("cannot write the MLflow spool %s (%s): %d record(s) lost", self.spool.path, e, len(records))

    def flush(self, wait: bool = True) -> None:
        """Spool the records of asynchronous calls that failed (``wait``: for all to finish)."""
        failed, why, pending = [], "", []
        for ops, record in self._in_flight:
            # RunOperations offers only a blocking wait(): its futures tell whether it would block
            if not wait and not all(f.done() for f in ops._operation_futures):
                pending.append((ops, record))
                continue
            try:
                ops.wait()
            except Exception as e:  # noqa: BLE001
                failed.append(record)
                why = _why(e)
        self._in_flight = pending
        if failed:
            self._offline(why)
            self._spool(failed)

    def _log(self, record: dict) -> bool:
        """Send ``record`` (metrics asynchronously) to the run, or spool it. False when spooled."""
        self.flush(wait=False)
        if self.online or self._connect():
            try:
                if record["t"] == "metrics":
                    ops = self.client.log_batch(self.run_id, metrics=_metrics(record), synchronous=False)
                    self._in_flight.append((ops, record))
                else:
                    self._apply(self.run_id, [record])
                return True
            except Exception as e:  # noqa: BLE001
                self._offline(_why(e))
        self._spool([record])
        return False

    def _apply(self, run_id: str, records: list[dict], conflicts: str = "warn") -> None:
        """Send records to ``run_id`` now (metrics batched within MLflow's limits)."""
        from mlflow.entities import Param

        c, metrics = self.client, [m for r in records if r["t"] == "metrics" for m in _metrics(r)]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            c.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        for r in records:
            t = r["t"]
            if t == "params":   # MLflow refuses to change a param: a changed one keeps its first value
                have = c.get_run(run_id).data.params
                new = [Param(k, v) for k, v in r["params"].items() if k not in have]
                for i in range(0, len(new), MAX_PARAMS_PER_BATCH):
                    c.log_batch(run_id, params=new[i:i + MAX_PARAMS_PER_BATCH])
                changed = sorted(k for k, v in r["params"].items() if have.get(k, v) != v and k not in self._conflicts)
                if changed and r.get("conflicts", conflicts) == "warn":
                    self._conflicts.update(changed)
                    log.warning("MLflow run %s keeps the first value of %d changed param(s): %s", run_id,
                                len(changed), ", ".join(changed[:20]))
            elif t == "text":
                c.log_text(run_id, r["text"], r["file"])
            elif t == "artifact":
                if Path(r["path"]).is_file():
                    c.log_artifact(run_id, r["path"], r.get("artifact_path") or None)
                else:
                    log.warning("MLflow: artifact %s no longer exists; not logged to %s", r["path"], run_id)
            elif t == "status" and r["status"] == "RUNNING":
                c.update_run(run_id, status="RUNNING")
            elif t == "status":
                c.set_terminated(run_id, r["status"], end_time=int(r["ts"]))

    def log_metrics(self, values: Mapping[str, Any], step: int, timestamp_ms: int | None = None) -> bool:
        vals = {}
        for k, v in values.items():
            with contextlib.suppress(TypeError, ValueError):   # mmengine may pass strings: skipped
                vals[str(k)] = to_float(v)
        ts = int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)
        return self._log({"t": "metrics", "step": int(step), "ts": ts, "values": vals}) if vals else True

    def log_params(self, params: Mapping[str, Any], conflicts: str = "warn") -> bool:
        flat = {_clean_key(k): _trunc(v, MAX_PARAM_VAL_LENGTH) for k, v in params.items()}
        return self._log({"t": "params", "params": flat, "conflicts": conflicts})

    def log_text(self, text: str, artifact_file: str) -> bool:
        return self._log({"t": "text", "text": text, "file": artifact_file})

    def log_artifacts(self, files: Iterable[tuple[str | os.PathLike, str | None]]) -> bool:
        return all([self._log({"t": "artifact", "path": str(Path(p).resolve()), "artifact_path": a})
                    for p, a in files])

    def set_status(self, status: str) -> bool:
        return self._log({"t": "status", "status": status, "ts": int(time.time() * 1000)})

    def sync(self) -> int | None:
        """Replay the spool into the store, then empty it: the number of records replayed,
        None when the store failed (the spool is kept whole; replaying it again is harmless)."""
        if not self.spool.has_pending():
            return 0
        try:
            with self.spool.lock():
                records = self.spool.read() if self.spool.has_pending() else []
                if not records:                # replayed meanwhile by another process
                    return 0
                if (why := _probe(self.uri)) is not None:
                    raise ConnectionError(why)
                idents = {self.identity.run_key: self.identity}
                by_run: dict[str, list[dict]] = {}
                for r in records:
                    if r["t"] == "run":
                        idents[r["run_key"]] = RunIdentity(**r["identity"])
                    else:
                        by_run.setdefault(r.get("run_key", self.identity.run_key), []).append(r)
                with _store_lock(self.uri):
                    for key, recs in by_run.items():
                        ident = idents.get(key) or RunIdentity(key, key.split("/")[0], self.identity.experiment)
                        self._apply(self._find_or_create(ident), recs, conflicts="ignore")
                self.spool.path.unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001
            self._offline(f"replaying {self.spool.path} failed: {_why(e)}")
            return None
        n = sum(map(len, by_run.values()))
        log.info("MLflow: replayed %d spooled record(s) from %s into %s", n, self.spool.path, self.uri)
        return n

    def close(self, status: str | None = "FINISHED") -> bool:
        """Wait for the asynchronous calls, set the status, replay. True when nothing is left."""
        self.flush()
        if status:
            self.set_status(status)
        if self._unspooled:
            self._spool([])
        if self.online:
            self.sync()
        else:
            self._connect(force=True)
        if left := self.spool.has_pending() or bool(self._unspooled):
            _warn(f"MLflow tracking store {self.uri} unreachable at the end of {self.label}: its records stay "
                  f"in {self.spool.path}; replay them with `python -m seesaw_lvis track --params <params> "
                  f"--row {self.identity.tags.get('row', '<row>')}`.")
        return not left


def _metrics(record: dict) -> list:
    from mlflow.entities import Metric

    return [Metric(_clean_key(k), float(v), int(record["ts"]), int(record["step"])) for k, v in record["values"].items()]


def sync_pending(work_dir: str | os.PathLike | None, params: Mapping[str, Any], row_id: str, seed: int = 0) -> int:
    """Replay the spool of ``row_id`` (in ``work_dir``, default the run's work dir) now: the
    number of records replayed (the runs named in the spool itself). Raises
    :class:`TrackingUnavailableError` when the store still cannot be reached."""
    spool_dir = Path(work_dir) if work_dir is not None else row_work_dir(params, row_id, seed)
    tracking = settings(params)
    fallback = RunIdentity(f"{row_id}/{params['scale']}/{params['dataset']}/unknown", row_id, tracking.experiment,
                           {"row": row_id})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingUnavailableWarning)
        done = RunLogger(tracking, fallback, spool_dir, label=f"row {row_id}").sync()
    if done is None:
        raise TrackingUnavailableError(f"MLflow tracking store {tracking.uri} unreachable; "
                                       f"{Spool(spool_dir).path} kept for a later replay")
    return done

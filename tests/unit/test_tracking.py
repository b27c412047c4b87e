"""engine/tracking, runs and mlflow_vis: one MLflow run per row, training curves through the
mmengine vis backend with MLflow's asynchronous logging, 8 concurrent writers on one SQLite store,
and a tracking server that goes down mid-run and loses nothing.

All stores are SQLite files under tmp_path, or an `mlflow server` on 127.0.0.1 started by
scripts/mlflow-server.sh; nothing else is contacted. Creating MLflow's tables takes ~10 s here, so one template database is made once and
copied (except for the concurrency test, which also races the table creation).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from seesaw_lvis.engine import mlflow_vis as V
from seesaw_lvis.engine import runs as R
from seesaw_lvis.engine import tracking as T
from seesaw_lvis.engine.evaluate import log_evaluation
from seesaw_lvis.evaluation.lvis_eval import METRIC_KEYS
from tests.conftest import mlflow_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ------------------------------------------------------------------------------------ helpers

def _uri(db: Path) -> str:
    return f"sqlite:///{db}"


def _client(db: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=_uri(db))


def _runs(db: Path, experiment: str = "seesaw_lvis", filter_string: str = ""):
    client = _client(db)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else list(client.search_runs([exp.experiment_id], filter_string, max_results=1000))


def _steps(db: Path, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client(db).get_metric_history(run_id, key))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_template(path: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An initialised, empty MLflow SQLite store, made in a child process (the test process then
    holds no connection a later fork could inherit)."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    proc = multiprocessing.get_context("fork").Process(target=_make_template, args=(str(path),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0 and path.is_file()
    return path


@pytest.fixture
def store(tmp_path, template_db, monkeypatch) -> Path:
    """A fresh copy of the template store in tmp_path; cwd is tmp_path (no stray mlruns/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, db)
    return db


def _backend(tmp_path: Path, uri: str, row: str = "t1_ce", chash: str = "abc123def456", retry_s: float = 3600,
             artifacts: Path | None = None):
    work = tmp_path / "work" / row
    tags = {"table": "1", "row": row, "title": f"title of {row}", "scale": "ci", "dataset": "synthetic",
            "config_hash": chash, "git_commit": "unknown", "kind": "train"}
    key = f"{row}/ci/synthetic/{chash}"
    return V.ResilientMLflowVisBackend(
        save_dir=str(work / "vis_data"), exp_name="seesaw_lvis", run_name=row, tags=tags, run_key=key,
        tracking_uri=uri, artifact_location=str(artifacts or tmp_path / "mlartifacts"), spool_dir=str(work),
        retry_interval_s=retry_s), work


def _config(work: Path):
    from mmengine.config import Config

    extra = {f"opt_{i}": i for i in range(150)}               # > 100 params: chunked batches
    return Config(dict(model=dict(type="MaskRCNN", roi_head=dict(bbox_head=[dict(type="A", n=1), dict(type="B")])),
                       classes=tuple(f"class_{i}" for i in range(2000)),  # a long value: truncated
                       work_dir=str(work), **extra))


def _scalars(step: int) -> dict:
    return {"loss": 1.0 / step, "loss_cls": 0.5 / step, "lr": 0.02 * min(1.0, step / 5)}


def _tracking_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, T.TrackingUnavailableWarning)]


# ------------------------------------------------------------------------------------ tests

def test_flatten_params_limits():
    flat = R.flatten_params({"a": {"b": [dict(c=1), dict(d=[1, 2])], "e": None}, "bad key!": "x" * 7000,
                             "f": 0.1, "empty": {}})
    assert flat["a.b.0.c"] == "1" and flat["a.b.1.d"] == "[1, 2]" and flat["a.e"] == "None"
    assert flat["f"] == "0.1" and flat["empty"] == "{}"
    assert len(flat["bad key_"]) == R.MAX_PARAM_VAL_LENGTH and flat["bad key_"].endswith("...")
    assert R.evaluation_metrics({"bbox": {"AP": 0.3, "APr": None, "foo": 1}, "lvis/segm_APc": 0.2,
                                 "mask_AP50": 0.5}) == {"bbox_AP": 0.3, "segm_APc": 0.2, "segm_AP50": 0.5}


def test_settings_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = R.settings({}, root=tmp_path)
    assert s.uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert s.experiment == "seesaw_lvis" and s.artifact_location == str(tmp_path.resolve() / "mlartifacts")
    s = R.settings({"tracking": {"uri": "http://127.0.0.1:5000", "experiment": "x",
                                 "artifact_location": "mlartifacts", "retry_interval_s": 5}}, root=tmp_path)
    assert (s.uri, s.experiment, s.artifact_location, s.retry_interval_s) == ("http://127.0.0.1:5000", "x", None, 5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/other.db")
    assert R.settings({"tracking": {"uri": "http://127.0.0.1:5000"}}, root=tmp_path).uri == "sqlite:////abs/other.db"


def test_training_curves_through_vis_backend(store, tmp_path):
    backend, work = _backend(tmp_path, _uri(store))
    backend.add_config(_config(work))
    steps = range(1, 26)
    for step in steps:
        backend.add_scalars(_scalars(step), step=step)
    (work / "20260101_000000").mkdir(parents=True)
    (work / "20260101_000000" / "20260101_000000.log").write_text("training log\n")
    backend.close()

    (run,) = _runs(store)
    tags = run.data.tags
    for key, value in {"table": "1", "row": "t1_ce", "title": "title of t1_ce", "scale": "ci",
                       "dataset": "synthetic", "config_hash": "abc123def456", "kind": "train",
                       "git_commit": "unknown", "run_key": "t1_ce/ci/synthetic/abc123def456"}.items():
        assert tags[key] == value
    params = run.data.params
    assert params["model.type"] == "MaskRCNN" and params["model.roi_head.bbox_head.1.type"] == "B"
    assert params["opt_149"] == "149" and len(params) >= 150
    assert len(params["classes"]) == R.MAX_PARAM_VAL_LENGTH
    for key in ("loss", "loss_cls", "lr"):
        assert _steps(store, run.info.run_id, key) == list(steps)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in _client(store).list_artifacts(run.info.run_id)}
    assert "config.py" in artifacts and "20260101_000000" in artifacts
    assert not T.Spool(work).has_pending()

    # resuming the row (a changed param, e.g. load_from) logs into the same run, never raises
    backend, work = _backend(tmp_path, _uri(store))
    cfg = _config(work)
    cfg.opt_0 = "changed on resume"
    backend.add_config(cfg)
    backend.add_scalars(_scalars(26), step=26)
    backend.close()
    (again,) = _runs(store)
    assert again.info.run_id == run.info.run_id and again.data.params["opt_0"] == "0"
    assert _steps(store, run.info.run_id, "loss") == list(range(1, 27))


def _worker(db: str, root: str, index: int, steps: int) -> None:
    backend, work = _backend(Path(root), f"sqlite:///{db}", row=f"t2_row{index}",
                             artifacts=Path(root) / "mlartifacts")
    backend.add_config(_config(work))
    for step in range(1, steps + 1):
        backend.add_scalars(_scalars(step), step=step)
    backend.close()
    assert not T.Spool(work).has_pending()


def test_eight_processes_lose_nothing(tmp_path, monkeypatch):
    """8 processes log into one fresh SQLite store at once (racing even MLflow's table creation):
    every run has every step of every metric, and nothing had to be spooled."""
    monkeypatch.chdir(tmp_path)
    db, steps = tmp_path / "shared.db", 20
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(db), str(tmp_path), i, steps)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 8
    runs = _runs(db)
    assert sorted(r.data.tags["row"] for r in runs) == sorted(f"t2_row{i}" for i in range(8))
    for run in runs:
        for key in ("loss", "loss_cls", "lr"):
            assert _steps(db, run.info.run_id, key) == list(range(1, steps + 1)), (run.data.tags["row"], key)
        assert run.data.params["opt_0"] == "0"


def test_metrics_go_through_mlflow_async_logging(store, tmp_path, monkeypatch):
    """A slow store does not slow training: add_scalars returns at once, MLflow's own async
    threads write the metrics, and close() waits until every step is in."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    writers, real = [], SqlAlchemyStore.log_batch

    def slow_log_batch(self, run_id, metrics, params, tags):
        if metrics:
            writers.append(threading.current_thread().name)
            time.sleep(0.3)
        return real(self, run_id, metrics, params, tags)

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", slow_log_batch)  # before the store is opened
    backend, work = _backend(tmp_path, _uri(store))
    backend.add_config(_config(work))
    t0 = time.monotonic()
    for step in range(1, 11):
        backend.add_scalars(_scalars(step), step=step)
    assert time.monotonic() - t0 < 1.5, "10 add_scalars waited for a store that takes 0.3 s a write"
    backend.close()
    (run,) = _runs(store)
    assert _steps(store, run.info.run_id, "loss") == list(range(1, 11)) and run.info.status == "FINISHED"
    assert writers and "MainThread" not in writers, writers
    assert not T.Spool(work).has_pending()


@pytest.fixture
def tracking_server(tmp_path):
    """scripts/mlflow-server.sh on a free port of 127.0.0.1 (SQLite backend in tmp_path):
    yields (uri, start, stop)."""
    port = _closed_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_SERVER_DIR": str(tmp_path / "server"), "MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1",
           "MLFLOW_SERVER_WORKERS": "1", "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'server.db'}",
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "server_artifacts")}

    script = mlflow_server(tmp_path, env)
    out = script("start")
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in out, out
    yield f"http://127.0.0.1:{port}", lambda: script("start"), lambda: script("stop")
    script("stop")


def test_server_down_mid_run_loses_nothing(tracking_server, tmp_path):
    """A row logs to a tracking server that goes down after step 5 and comes back after step 10:
    training never waits for it, one warning names the server and the spool, and the run ends
    with every step once, its params and FINISHED; replaying again adds nothing."""
    uri, start, stop = tracking_server
    backend, work = _backend(tmp_path, uri, retry_s=0)   # re-probe at every call
    backend.add_config(_config(work))
    for step in range(1, 6):
        backend.add_scalars(_scalars(step), step=step)
    backend.flush()
    assert not T.Spool(work).has_pending()
    stop()
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(6, 11):
            backend.add_scalars(_scalars(step), step=step)
        backend.flush()
    assert time.monotonic() - t0 < 10, "a server that is down must not stall training"
    (warning,) = _tracking_warnings(record)
    assert uri in str(warning.message) and str(work / T.SPOOL_NAME) in str(warning.message)
    spooled = [json.loads(x) for x in (work / T.SPOOL_NAME).read_text().splitlines()]
    assert sorted(r["step"] for r in spooled if r["t"] == "metrics") == list(range(6, 11))

    start()
    backend.add_scalars(_scalars(11), step=11)   # reconnects, replays the spool, then logs
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        backend.close()
    assert _tracking_warnings(record) == []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("seesaw_lvis").experiment_id])
    for key in ("loss", "loss_cls", "lr"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(1, 12))
    assert run.data.params["model.type"] == "MaskRCNN" and run.info.status == "FINISHED"
    assert "config.py" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not T.Spool(work).has_pending()
    assert backend.experiment.sync() == 0


def test_outage_mid_run_and_replay_from_the_cli(store, tmp_path, monkeypatch, default_params):
    """The store fails after a good start (every write raises): spooled with one warning; a spool
    left at the end is replayed later by sync_pending (the `track` CLI verb); a replay interrupted
    after sending but before deleting the spool stores nothing twice."""
    backend, work = _backend(tmp_path, _uri(store))
    backend.add_config(_config(work))
    for step in range(1, 4):
        backend.add_scalars(_scalars(step), step=step)
    logger = backend.experiment
    assert logger.online

    def failing(*args, **kwargs):
        raise ConnectionError("503 Service Unavailable")

    for name in ("log_batch", "get_run", "search_runs", "update_run", "set_terminated", "log_artifact", "log_text"):
        monkeypatch.setattr(logger.client, name, failing)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(4, 9):
            backend.add_scalars(_scalars(step), step=step)
        backend.close()
    msgs = [str(w.message) for w in _tracking_warnings(record)]
    assert len(msgs) == 2 and "503" in msgs[0] and "unreachable at the end" in msgs[1]
    monkeypatch.undo()
    (run,) = _runs(store)
    assert _steps(store, run.info.run_id, "loss") == [1, 2, 3]
    assert run.info.status == "RUNNING"

    # later, from the CLI: the store answers again
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _uri(store))
    params = {**default_params, "tracking": {"artifact_location": str(tmp_path / "mlartifacts")}}
    spool_copy = (work / T.SPOOL_NAME).read_bytes()
    assert T.sync_pending(work, params, "t1_ce") > 0
    (run,) = _runs(store)
    assert _steps(store, run.info.run_id, "loss") == list(range(1, 9))
    assert run.info.status == "FINISHED"
    assert T.sync_pending(work, params, "t1_ce") == 0

    # a crash after every record reached the store but before the spool was deleted
    (work / T.SPOOL_NAME).write_bytes(spool_copy)
    assert T.sync_pending(work, params, "t1_ce") > 0
    for key in ("loss", "loss_cls", "lr"):
        assert _steps(store, run.info.run_id, key) == list(range(1, 9))


def test_spool_survives_a_torn_line_and_a_replay_done_elsewhere(store, tmp_path):
    """A line a crash cut short costs only itself (the next record starts a new line), and a
    replay that finds the spool emptied by another process meanwhile reports 0, not an outage."""
    backend, work = _backend(tmp_path, _uri(store))
    logger = backend.experiment
    spool = T.Spool(work)
    spool.append([{"t": "metrics", "step": 1, "ts": 1, "values": {"loss": 1.0}, "run_key": logger.identity.run_key}])
    with spool.path.open("a") as f:
        f.write('{"t": "metrics", "step": 2, "ts"')                # cut short by a crash
    spool.append([{"t": "metrics", "step": 3, "ts": 3, "values": {"loss": 0.3}, "run_key": logger.identity.run_key}])
    assert [r["step"] for r in spool.read()] == [1, 3]
    assert logger.sync() == 2 and logger.online
    (run,) = _runs(store)
    assert _steps(store, run.info.run_id, "loss") == [1, 3]
    spool.path.write_text('{"t": "metrics", "step": 4')            # nothing complete left to replay
    assert logger.sync() == 0 and logger.online
    backend.close()


def test_run_identity_reuses_and_splits_runs(store, tmp_path, default_params):
    from seesaw_lvis.configs import resolve

    params = {**default_params, "tracking": {"uri": _uri(store), "artifact_location": str(tmp_path / "mlartifacts")}}
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text('{"bbox": {"AP": 0.25}}\n')
    metrics = {"bbox": {k: 0.1 for k in METRIC_KEYS} | {"APr": None}, "segm": {"AP": 0.2, "APc": 0.15}}

    assert log_evaluation(params, "t1_ce", metrics, [metrics_file], work_dir=tmp_path / "w")
    assert log_evaluation(params, "t1_ce", metrics, [metrics_file], work_dir=tmp_path / "w")
    (run,) = _runs(store)
    chash = resolve.config_hash(resolve.load(params, "t1_ce"))
    tags = run.data.tags
    assert tags["config_hash"] == chash and tags["row"] == "t1_ce" and tags["kind"] == "train"
    assert tags["table"] == "1" and tags["scale"] == params["scale"] and tags["dataset"] == params["dataset"]
    assert tags["git_commit"] == R.git_commit(Path(__file__).parent)
    assert run.data.metrics["bbox_AP"] == pytest.approx(0.1) and "bbox_APr" not in run.data.metrics
    assert run.data.metrics["segm_APc"] == pytest.approx(0.15)
    assert run.data.params["randomness.seed"] == str(params["seed"])
    assert "evaluation" in {a.path for a in _client(store).list_artifacts(run.info.run_id)}

    # the same (row, scale, dataset, hash) from the vis backend: still the same run
    backends = V.vis_backends(params, "t1_ce", tmp_path / "w")
    assert [b["type"] for b in backends] == ["LocalVisBackend", "ResilientMLflowVisBackend"]
    from mmengine.registry import VISBACKENDS

    backend = VISBACKENDS.build({**backends[1], "save_dir": str(tmp_path / "w" / "vis_data")})
    backend.add_scalars({"loss": 1.0}, step=1)
    backend.close()
    assert [r.info.run_id for r in _runs(store)] == [run.info.run_id]

    # another replicate seed -> another hash -> another run of the same row, tagged with its seed
    assert log_evaluation(params, "t1_ce", metrics, [], work_dir=tmp_path / "w", seed=params["seed"] + 1)
    runs = _runs(store, filter_string="tags.row = 't1_ce'")
    assert len(runs) == 2 and len({r.data.tags["config_hash"] for r in runs}) == 2
    assert sorted(r.data.tags["seed"] for r in runs) == sorted([str(params["seed"]), str(params["seed"] + 1)])


SUBPROCESS_PROBE = """
import json, subprocess, sys, threading
from pathlib import Path
started = []
_init = subprocess.Popen.__init__
def init(self, *args, **kwargs):
    started.append(threading.current_thread().name)
    _init(self, *args, **kwargs)
subprocess.Popen.__init__ = init
from seesaw_lvis.engine import mlflow_vis as V
root = Path(sys.argv[1])
backend = V.ResilientMLflowVisBackend(
    save_dir=str(root / "work" / "vis_data"), exp_name="seesaw_lvis", run_name="t1_ce",
    tags={"row": "t1_ce"}, run_key="t1_ce/ci/synthetic/abc", tracking_uri=sys.argv[2],
    artifact_location=str(root / "mlartifacts"), spool_dir=str(root / "work"))
backend.add_scalars({"loss": 1.0}, step=1)
backend.close()
print(json.dumps(started))
"""


def test_logging_thread_starts_no_subprocess(store, tmp_path):
    """A subprocess started on the logging thread while the training loop forks its dataloader
    workers can hang the run for good (its pipe leaks into the workers): MLflow's import and the
    store connection, which start subprocesses (`uname`), happen on the calling thread; MLflow's
    async logging threads start none. A fresh
    interpreter, so that MLflow is not imported yet."""
    out = subprocess.run([sys.executable, "-c", SUBPROCESS_PROBE, str(tmp_path), _uri(store)],
                         capture_output=True, text=True, timeout=300, check=True)
    threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert threads, "MLflow's import started no subprocess: nothing left to prove here"
    assert set(threads) == {"MainThread"}, threads

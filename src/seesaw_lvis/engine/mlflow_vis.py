"""mmengine's MLflow vis backend, logging into a row's run through :class:`~seesaw_lvis.engine.tracking.RunLogger`.

mmengine's ``MLflowVisBackend`` starts a new run through MLflow's global state and raises when
the store is down. The subclass here finds the row's run (:mod:`seesaw_lvis.engine.runs`; a
resumed row logs into the same run), sends scalars with MLflow's asynchronous logging and spools
what the store did not take (:mod:`seesaw_lvis.engine.tracking`). Registered in mmengine's
``VISBACKENDS`` on import; :func:`vis_backends` gives a row's ``visualizer.vis_backends``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import MLflowVisBackend, force_init_env

from seesaw_lvis.engine.runs import (DEFAULTS, RunIdentity, TrackingSettings, _clean_key, flatten_params,
                                     run_identity, settings)
from seesaw_lvis.engine.tracking import RunLogger, Spool


@VISBACKENDS.register_module(force=True)
class ResilientMLflowVisBackend(MLflowVisBackend):
    """mmengine's ``MLflowVisBackend`` logging into the row's run (found again by ``run_key``)
    through a :class:`RunLogger`: asynchronous metrics, a spool while the store is down.

    Extra args: ``run_key`` (default: the ``run_key`` tag), ``spool_dir`` (the row's work dir;
    default ``save_dir``), ``retry_interval_s``. ``experiment`` returns the :class:`RunLogger`.
    """

    def __init__(self, save_dir: str, *args, run_key: str | None = None, spool_dir: str | None = None,
                 retry_interval_s: float = DEFAULTS["retry_interval_s"], **kwargs):
        super().__init__(save_dir, *args, **kwargs)
        self._spool_dir = spool_dir or save_dir
        self._run_key = run_key or (self._tags or {}).get("run_key") or self._run_name or "run"
        self._retry_interval_s = float(retry_interval_s)
        self._logger: RunLogger | None = None
        self.cfg = None

    def _make_logger(self) -> RunLogger:
        tracking = TrackingSettings(self._tracking_uri or DEFAULTS["uri"], self._exp_name or DEFAULTS["experiment"],
                                    self._artifact_location, self._retry_interval_s)
        tags = {**(self._tags or {}), "run_key": self._run_key}
        ident = RunIdentity(self._run_key, self._run_name or self._run_key, tracking.experiment, tags)
        return RunLogger(tracking, ident, self._spool_dir, label=f"row {tags.get('row', self._run_key)}")

    def _init_env(self) -> None:
        os.makedirs(self._save_dir, exist_ok=True)
        self._logger = self._make_logger()
        # Connect on the calling thread, before the training loop forks dataloader workers: MLflow's
        # import and store opening run subprocesses (`uname`, for its telemetry platform record);
        # run from a logging thread while the main thread forks a worker, such a subprocess's pipe
        # leaks into the worker and communicate() waits for it: the run hung in close() (seen in the
        # demo). MLflow's async threads then only write to the store.
        if self._logger.start():
            self._logger.set_status("RUNNING")
        if self._params:
            self._logger.log_params(flatten_params(self._params))

    @property  # type: ignore[override]
    @force_init_env
    def experiment(self) -> RunLogger:
        self._logger.flush()
        return self._logger

    def flush(self) -> None:
        """Wait until everything logged so far has reached the store or the spool."""
        if self._logger is not None:
            self._logger.flush()

    @force_init_env
    def add_config(self, config, **kwargs) -> None:
        self.cfg = config
        d = config.to_dict()
        if self._tracked_config_keys is not None:
            d = {k: d[k] for k in self._tracked_config_keys if k in d}
        self._logger.log_params(flatten_params(d))
        self._logger.log_text(config.pretty_text, "config.py")

    @force_init_env
    def add_image(self, name: str, image, step: int = 0, **kwargs) -> None:
        """Saved under ``<spool_dir>/mlflow_images/`` and logged as an artifact."""
        from PIL import Image

        out = Path(self._spool_dir) / "mlflow_images" / f"{_clean_key(name).replace('/', '_')}_{step}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out)
        self._logger.log_artifacts([(out, "images")])

    @force_init_env
    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        self._logger.log_metrics({name: value}, step)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: str | None = None, **kwargs) -> None:
        self._logger.log_metrics(scalar_dict, step)

    def close(self) -> None:
        """The work dir's config, logs and scalars as artifacts, then the run FINISHED."""
        if self._logger is None:   # never used here (a non-zero DDP rank): replay a spool left before
            from mmengine.dist import is_main_process

            if is_main_process() and Spool(self._spool_dir).has_pending():
                self._make_logger().sync()
            return
        work_dir = (self.cfg.get("work_dir") if self.cfg is not None else None) or self._spool_dir
        if os.path.isdir(work_dir):
            from mmengine.utils import scandir

            names = sorted(n for n in scandir(work_dir, self._artifact_suffix, True)
                           if not os.path.basename(n).startswith(("mlflow_spool", ".")))
            self._logger.log_artifacts([(Path(work_dir) / n, os.path.dirname(n) or None) for n in names])
        self._logger.close("FINISHED")


def vis_backends(params: Mapping[str, Any], row_id: str, work_dir: str | os.PathLike, cfg=None) -> list[dict]:
    """``visualizer.vis_backends`` for ``row_id``: mmengine's local JSON scalars and the row's
    MLflow run (spool in ``work_dir``); ``cfg`` as for :func:`run_identity`."""
    tracking, ident = settings(params), run_identity(params, row_id, cfg)
    return [dict(type="LocalVisBackend"),
            dict(type="ResilientMLflowVisBackend", exp_name=tracking.experiment, run_name=ident.run_name,
                 tags=dict(ident.tags), run_key=ident.run_key, tracking_uri=tracking.uri,
                 artifact_location=tracking.artifact_location, spool_dir=str(Path(work_dir).resolve()),
                 retry_interval_s=tracking.retry_interval_s)]

"""Benchmark of the ``stats`` stage at LVIS v1's size: seconds and peak RSS.

The training annotations are :func:`seesaw_lvis.data.lvis_sized.train_annotations` (1203
categories, 337 / 461 / 405 rare / common / frequent, 100,170 images, ~1.27 M instances with
polygons; no pixels), written to a temporary JSON file by a child process; the stage then runs
exactly as the pipeline calls it (``python -m seesaw_lvis stats ...``), in a second child
whose wall time and peak RSS (its own ``ru_maxrss``, from ``wait4``: the parent stays small, so
what ``exec`` carries over from it is negligible) are recorded, and its outputs are checked
(LVIS's groups recovered from the image counts).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from seesaw_lvis.io import write_json


def write_train_json(path: str, seed: int) -> None:
    """The LVIS-sized training JSON at ``path`` (run in a child: the parent stays small)."""
    from seesaw_lvis.data.lvis_sized import train_annotations

    Path(path).write_text(json.dumps(train_annotations(int(seed)), separators=(",", ":")))


def run(out: Path, params_file: str = "params/pipeline.yaml", seed: int = 0) -> dict[str, Any]:
    from seesaw_lvis.data.lvis_sized import LVIS_V1

    with tempfile.TemporaryDirectory(prefix="stats_bench.") as tmp:
        tmp = Path(tmp)
        path = tmp / "lvis_v1_train.json"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from seesaw_lvis.bench.stats import write_train_json; "
                        "write_train_json(*sys.argv[1:])", str(path), str(seed)], check=True)
        generate_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "seesaw_lvis", "stats", "--params", params_file, "--train-json", str(path),
               "--out-dir", str(tmp / "stats"), "--figures", str(tmp / "figures")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"stats failed on the LVIS-sized set:\n{stderr[-4000:]}")
        stats: Mapping[str, Any] = json.loads((tmp / "stats" / "class_freq.json").read_text())
        result = {
            "what": "the stats stage on an LVIS v1-sized training JSON (seesaw_lvis.data.lvis_sized)",
            "date": time.strftime("%Y-%m-%d"), "images": stats["num_images"],
            "annotations": stats["num_annotations"], "categories": stats["num_categories"],
            "json_mb": round(path.stat().st_size / 2**20, 1), "generate_seconds": round(generate_s, 1),
            "stats_seconds": round(seconds, 1), "stats_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "groups": stats["groups"],
            "groups_as_lvis_v1": stats["groups"] == {"r": LVIS_V1["rare"], "c": LVIS_V1["common"],
                                                     "f": LVIS_V1["frequent"]},
        }
    write_json(out, result)
    return result

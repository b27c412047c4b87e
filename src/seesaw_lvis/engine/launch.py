"""Multi-GPU training inside one cluster job, with torch's own launcher (torchrun).

A training job gets its GPUs from SLURM (``gpu: 8`` at full scale); the train verb then
re-executes itself under ``torchrun --nproc-per-node <GPUs>`` so mmengine runs DDP, one
process per GPU. On a CPU machine, or when already launched, nothing happens.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def relaunch_distributed_if_needed() -> None:
    if "LOCAL_RANK" in os.environ:  # already one process of a distributed launch
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus <= 1:
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "seesaw_lvis", *sys.argv[1:], "--launcher", "pytorch"]
    log.info("launching DDP on %d GPUs: %s", gpus, " ".join(cmd))
    os.execv(sys.executable, cmd)

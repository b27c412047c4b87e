"""Seesaw Loss counts under torch.distributed: 2 CPU processes on gloo.

Each rank sees different labels. With ``sync_counts=True`` (default) every rank's
``cum_samples`` equals the global histogram after every iteration, and the loss of a rank
is the single-process loss computed with those global counts; with ``sync_counts=False``
each rank keeps its own counts (mmdet's behaviour), which differ.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
C = 30
N = 64
ITERS = 4


def rank_batch(rank: int, it: int):
    """Deterministic, rank-dependent long-tailed labels and logits."""
    gen = torch.Generator().manual_seed(1000 * rank + it)
    # rank 0 favours low class ids, rank 1 high ones: the local histograms differ a lot
    probs = torch.arange(1, C + 1, dtype=torch.float64).pow(-1.5)
    if rank % 2:
        probs = probs.flip(0)
    y = torch.multinomial(probs, N, replacement=True, generator=gen)
    y[: N // 4] = C  # some background
    x = torch.randn(N, C + 2, generator=gen) * 2
    return x, y


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from seesaw_lvis.models.losses import SeesawLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        synced = SeesawLoss(num_classes=C)  # sync_counts=True by default
        local = SeesawLoss(num_classes=C, sync_counts=False)
        history, losses = [], []
        for it in range(ITERS):
            x, y = rank_batch(rank, it)
            xa = x.clone().requires_grad_()
            out = synced(xa, y, torch.ones(N), avg_factor=float(N))
            sum(out.values()).backward()
            local(x, y, torch.ones(N), avg_factor=float(N))
            history.append(synced.cum_samples.clone())
            losses.append({k: v.detach() for k, v in out.items()})
        torch.save(dict(synced=synced.cum_samples, local=local.cum_samples, history=history,
                        losses=losses), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_counts_summed_over_ranks(tmp_path):
    init_file = tmp_path / "pg_init"
    mp.spawn(_worker, args=(str(init_file), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    def hist(rank, upto):
        return sum(torch.bincount(rank_batch(rank, it)[1], minlength=C + 1)
                   for it in range(upto))

    global_total = sum(hist(r, ITERS) for r in range(WORLD))
    for r in range(WORLD):
        assert res[r]["synced"].dtype == torch.long
        assert torch.equal(res[r]["synced"], global_total)
        for it in range(ITERS):  # synchronised after every iteration, not only at the end
            assert torch.equal(res[r]["history"][it],
                               sum(hist(q, it + 1) for q in range(WORLD)))
        # sync_counts=False: per-rank counts, as mmdet
        assert torch.equal(res[r]["local"], hist(r, ITERS))
    assert not torch.equal(res[0]["local"], res[1]["local"])
    assert not torch.equal(res[0]["local"], global_total)

    # the loss itself stays per rank: a single process fed rank r's last batch, with the
    # global counts preloaded, gives rank r's loss
    from seesaw_lvis.models.losses import SeesawLoss
    for r in range(WORLD):
        x, y = rank_batch(r, ITERS - 1)
        single = SeesawLoss(num_classes=C)
        single.cum_samples.copy_(global_total - torch.bincount(y, minlength=C + 1))
        out = single(x, y, torch.ones(N), avg_factor=float(N))
        for k, v in out.items():
            torch.testing.assert_close(v, res[r]["losses"][-1][k], rtol=1e-6, atol=1e-6)
        assert torch.equal(single.cum_samples, global_total)

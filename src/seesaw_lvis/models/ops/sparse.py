"""The one sparse helper our CPU ops share: a CSR matrix built from trusted parts."""
from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import Tensor


def csr_matrix(crow: Tensor, cols: Tensor, values: Tensor, shape: Tuple[int, int]) -> Tensor:
    """``torch.sparse_csr_tensor`` without its invariant checks (the callers build row pointers
    and in-range columns by construction) and without its "CSR support is in beta" warning:
    CSR x dense products are all we use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)

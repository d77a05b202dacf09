"""Exact order statistics for magnitude thresholds, fast on CPU and sync-free on GPU.

On CPU, numpy's vectorised sort of a few thousand floats is several times faster than
``torch.kthvalue`` (quickselect mispredicts its branches on fresh data every step) and than
``torch.sort``. On other devices ``torch.kthvalue`` runs on the device with no host sync (and on
the CPU while torch.compile/export trace).
"""

from __future__ import annotations

import numpy as np
import torch

from pquant.kernels import tracing


def midpoint_threshold(values: torch.Tensor, n_below: int) -> float | torch.Tensor:
    """Midpoint between the ``n_below``-th and ``(n_below + 1)``-th smallest of ``values``.

    Exactly ``n_below`` values lie strictly below the result when there are no ties.

    Args:
        values: any tensor (flattened, detached internally).
        n_below: in ``[1, values.numel() - 1]``.

    Returns:
        A python float on CPU, a 0-dim tensor on other devices (no host synchronisation).
    """
    flat = values.detach().reshape(-1)
    if flat.device.type == "cpu" and not tracing():  # (traced: the device path, same value)
        ordered = np.sort(flat.numpy())
        low, high = ordered[n_below - 1], ordered[n_below]
        return float(high - (high - low) * ordered.dtype.type(0.5))
    low = torch.kthvalue(flat, n_below).values
    high = torch.kthvalue(flat, n_below + 1).values
    return high - (high - low) * 0.5

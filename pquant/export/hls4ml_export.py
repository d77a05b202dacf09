"""``to_hls4ml``: a finalised model as an hls4ml project whose C++ emulation is bit-exact."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pquant.export.plan import plan
from pquant.nn.export_ops import ExportError

log = logging.getLogger(__name__)


class HLSExport:
    """An exported hls4ml model plus how to feed it pquant-shaped inputs.

    Attributes:
        hls_model: the ``hls4ml`` ``ModelGraph`` (``write()``, ``compile()``, ``build()``).
        output_dir: the project directory.
        in_shape: per-sample input shape of the pquant model.
    """

    def __init__(self, hls_model, output_dir: Path, in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...]) -> None:
        self.hls_model = hls_model
        self.output_dir = output_dir
        self.in_shape = in_shape
        self.out_shape = out_shape

    def compile(self) -> None:
        """Build hls4ml's C++ emulation library (g++)."""
        self.hls_model.compile()

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Outputs of the compiled emulation for inputs ``x`` of shape ``(B, *in_shape)``."""
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                       dtype=np.float64)
        n = x.shape[0]
        if len(self.in_shape) > 1:  # torch's channels-first -> hls4ml's channels-last
            x = np.moveaxis(x.reshape(n, *self.in_shape), 1, -1)
        y = self.hls_model.predict(np.ascontiguousarray(x.reshape(n, -1)))
        y = np.asarray(y, dtype=np.float64)
        if len(self.out_shape) > 1:
            last = (*self.out_shape[1:], self.out_shape[0])
            y = np.moveaxis(y.reshape(n, *last), -1, 1)
        return y.reshape(n, *self.out_shape)


def to_hls4ml(model: nn.Module, example_input: torch.Tensor, output_dir: str | Path,
              backend: str = "Vitis", io_type: str = "io_parallel", compile: bool = False,
              project_name: str = "myproject", part: str | None = None) -> HLSExport:
    """Write the finalised ``model`` as an hls4ml project (and optionally compile it).

    Every precision comes from pquant's formats (see :mod:`pquant.export.hls4ml_writer`): the
    input type is the first quantizer, each quantizer is an ``ap_fixed`` cast with pquant's
    rounding/overflow mode, and weights, biases, accumulators and results are exact types.
    Pruned weights are exact zeros.

    Args:
        model: a finalised pquant model (``nn.Sequential``).
        example_input: a batch ``(B, *shape)`` (only the shape is used).
        output_dir: the project directory.
        backend: hls4ml backend (``Vitis``, ``Vivado``).
        io_type: only ``io_parallel`` (per-element quantizers need it).
        compile: build the C++ emulation (g++), so :meth:`HLSExport.predict` works.
        project_name: top-level function name.
        part: FPGA part (the backend's default when None).

    Raises:
        ExportError: a layer or mode hls4ml cannot compute exactly (named in the message).
    """
    import hls4ml
    from hls4ml.model import ModelGraph
    from hls4ml.utils.config import create_config

    from pquant.export.hls4ml_writer import LayerListBuilder

    if io_type != "io_parallel":
        raise ExportError(f"to_hls4ml: io_type must be 'io_parallel' (per-element fixed-point "
                          f"casts need it), got {io_type!r}")
    if backend.lower() not in ("vitis", "vivado"):
        raise ExportError(f"to_hls4ml: backend must be 'Vitis' or 'Vivado', got {backend!r}")
    steps = plan(model, example_input)
    in_shape = tuple(example_input.shape[1:])
    layers, precision = LayerListBuilder(steps, in_shape).build()
    output_dir = Path(output_dir)
    kwargs = {"io_type": io_type}
    if part is not None:
        kwargs["part"] = part
    config = create_config(output_dir=str(output_dir), project_name=project_name,
                           backend=backend, **kwargs)
    config["HLSConfig"] = {
        "Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 1, "Strategy": "Latency",
                  "BitExact": False},
        "LayerName": precision,
    }
    hls_model = ModelGraph.from_layer_list(config, layers)
    hls_model.write()
    log.info("hls4ml %s project written to %s (hls4ml %s)", backend, output_dir,
             hls4ml.__version__)
    with torch.no_grad():
        out_shape = tuple(model.eval()(example_input[:1]).shape[1:])
    export = HLSExport(hls_model, output_dir, in_shape, out_shape)
    if compile:
        export.compile()
    return export

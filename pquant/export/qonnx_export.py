"""``to_qonnx`` and running the result with qonnx's own executor."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pquant.export.plan import plan

log = logging.getLogger(__name__)


def to_qonnx(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> Path:
    """Write the finalised ``model`` as a QONNX model (standard ONNX ops + ``Quant`` nodes).

    The file passes ``onnx.checker``, loads in ``qonnx.core.modelwrapper.ModelWrapper``, survives
    qonnx's cleanup and shape inference, and :func:`run_qonnx` (qonnx's executor) reproduces the
    model's outputs bit for bit.

    Args:
        model: a finalised pquant model (``nn.Sequential``; see :func:`pquant.finalize`).
        example_input: a batch of inputs ``(B, *shape)`` (only its shape is used).
        path: output ``.onnx`` file.

    Returns:
        The path written.

    Raises:
        ExportError: a layer, format or mode that QONNX cannot state exactly (the message names
            the layer, the setting and what to change).
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from pquant.export.qonnx_writer import build

    steps = plan(model, example_input)
    in_shape = tuple(example_input.shape[1:])
    with torch.no_grad():
        out_shape = tuple(model.eval()(example_input[:1]).shape[1:])
    proto = build(steps, in_shape, out_shape)
    wrapper = cleanup_model(ModelWrapper(proto))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper.save(str(path))
    log.info("QONNX model written to %s (%d nodes)", path, len(wrapper.graph.node))
    return path


def run_qonnx(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run the QONNX model at ``path`` on ``x`` with ``qonnx.core.onnx_exec.execute_onnx``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    x = np.asarray(x, dtype=np.float32)
    wrapper = ModelWrapper(str(path))
    graph = wrapper.graph
    name_in, name_out = graph.input[0].name, graph.output[0].name
    # the batch dimension is symbolic in the file; the executor wants it concrete
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = x.shape[0]
    del graph.value_info[:]
    wrapper = wrapper.transform(InferShapes())
    out = execute_onnx(wrapper, {name_in: x})
    return np.asarray(out[name_out])

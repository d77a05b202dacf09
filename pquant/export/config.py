"""The ``export`` config group: which deployment formats a run writes and checks after training."""

from __future__ import annotations

from dataclasses import dataclass, field

from pquant.config.registry import register_schema
from pquant.errors import ConfigError

FORMATS = ("qonnx", "hls4ml")


@register_schema("export", "default")
@dataclass
class ExportConfig:
    """``export=none|qonnx|hls4ml|both``.

    Attributes:
        formats: subset of ``[qonnx, hls4ml]`` written into the run directory and checked bit
            for bit against the finalised model on the whole test set.
        backend: hls4ml backend (``Vitis`` or ``Vivado``).
        io_type: hls4ml I/O type (only ``io_parallel``).
    """

    formats: list[str] = field(default_factory=list)
    backend: str = "Vitis"
    io_type: str = "io_parallel"

    def validate(self, path: str = "export") -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ConfigError(f"{path}.formats must be a subset of {list(FORMATS)}, got {bad}")
        if self.backend not in ("Vitis", "Vivado"):
            raise ConfigError(f"{path}.backend must be one of ['Vitis', 'Vivado'], got "
                              f"{self.backend!r}")
        if self.io_type != "io_parallel":
            raise ConfigError(f"{path}.io_type must be one of ['io_parallel'], got "
                              f"{self.io_type!r}")


def export_settings(cfg) -> ExportConfig:
    """The validated export section of a composed config (``none`` when absent); checks that the
    ``export`` extra is installed when a format is asked for -- before any training."""
    node = cfg.get("export") if hasattr(cfg, "get") else None
    if node is None:
        return ExportConfig()
    settings = ExportConfig(formats=[str(f) for f in node.get("formats", [])],
                            backend=str(node.get("backend", "Vitis")),
                            io_type=str(node.get("io_type", "io_parallel")))
    settings.validate()
    needed = {"qonnx": ("onnx", "qonnx"), "hls4ml": ("hls4ml",)}
    for fmt in settings.formats:
        for module in needed[fmt]:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(
                    f"export={fmt} needs the optional 'export' extra ({module} is not "
                    f"installed): pip install torch==2.13.0 -e \".[export]\"") from None
    return settings

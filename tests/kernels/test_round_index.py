"""``ROUND_INDEX`` (beside :class:`RoundMode`) matches the C++ kernels' enum; the kernels package
does not import the quantizers (no ``kernels <-> quant`` cycle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pquant.kernels
from pquant.quant.modes import ROUND_INDEX, RoundMode

KERNELS = Path(pquant.kernels.__file__).resolve().parent


def test_round_index_is_the_cpp_enum():
    source = (KERNELS / "pquant_kernels.cpp").read_text()
    body = re.search(r"enum Round : int \{([^}]*)\}", source).group(1)
    cpp = {name.strip(): int(value) for name, value in
           (item.split("=") for item in body.split(",") if item.strip())}
    assert cpp == {mode.name: ROUND_INDEX[mode] for mode in RoundMode}


def test_kernels_import_nothing_of_pquant_but_themselves():
    for path in KERNELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("pquant.") or node.module.startswith(
                    "pquant.kernels"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("pquant.") or a.name.startswith("pquant.kernels")
                           for a in node.names), path.name

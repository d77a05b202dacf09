"""The ``ap_fixed`` oracle: small C++ programs compiled against the real ``ap_types`` headers.

The headers are the ones the hls4ml wheel ships (``hls4ml/templates/vivado/ap_types``, Apache
2.0; installed with the ``export`` extra). They are found without importing hls4ml. A program is
generated for a list of *cases* (one ``ap_fixed``/``ap_ufixed`` instantiation each), compiled
once per test session into a cache folder keyed by its source, and run on binary files of
doubles. Nothing here is a model of ap_fixed: every expected value comes from the library.

Used by ``tests/quant/test_ap_fixed_oracle.py`` (conversions) and the finalised-layer oracle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: pquant round-mode name -> ap_fixed quantization mode
AP_Q = {"TRN": "AP_TRN", "RND": "AP_RND", "RND_CONV": "AP_RND_CONV", "TRN_ZERO": "AP_TRN_ZERO",
        "RND_ZERO": "AP_RND_ZERO", "RND_MIN_INF": "AP_RND_MIN_INF", "RND_INF": "AP_RND_INF"}
#: pquant overflow-mode name -> ap_fixed overflow mode
AP_O = {"SAT": "AP_SAT", "SAT_SYM": "AP_SAT_SYM", "WRAP": "AP_WRAP", "WRAP_SM": "AP_WRAP_SM"}


def headers() -> Path | None:
    """The ``ap_types`` include folder of the installed hls4ml wheel, or None."""
    env = os.environ.get("PQUANT_AP_TYPES")
    if env:
        return Path(env) if (Path(env) / "ap_fixed.h").exists() else None
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    return folder if (folder / "ap_fixed.h").exists() else None


def compiler() -> str | None:
    """A working C++ compiler (``CXX`` or g++), or None."""
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None
    return path if ok else None


def missing_reason() -> str | None:
    """Why the oracle cannot run here (None: it can)."""
    if compiler() is None:
        return "no C++ compiler (g++ or $CXX) on PATH"
    if headers() is None:
        return ("ap_types headers not found: install the export extra "
                "(pip install torch==2.13.0 -e '.[test,export]') or set PQUANT_AP_TYPES")
    return None


def require() -> None:
    """Skip the calling test when the oracle cannot run here -- except in CI (``CI=true``),
    where a missing compiler or missing headers is a failure, not a silent skip."""
    import pytest

    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"the ap_fixed oracle must run in CI: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Format:
    """A pquant format ``(k, i, f)`` and its ``ap_fixed<W, I>`` twin (``W = k + i_eff + f``)."""

    k: int
    i: int
    f: int

    @property
    def i_eff(self) -> int:
        return max(self.i, -self.f)

    @property
    def width(self) -> int:
        return self.k + self.i_eff + self.f

    @property
    def int_bits(self) -> int:
        """ap_fixed's ``I`` (integer bits including the sign)."""
        return self.k + self.i_eff

    def ap_type(self, round_mode: str, overflow_mode: str) -> str:
        base = "ap_fixed" if self.k else "ap_ufixed"
        return f"{base}<{self.width}, {self.int_bits}, {AP_Q[round_mode]}, {AP_O[overflow_mode]}>"


def _build(source: str, cache: Path) -> Path:
    """Compile ``source`` once (cached by its hash) and return the executable."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    exe = cache / f"oracle_{digest}"
    if exe.exists():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = Path(tmp) / "oracle.cpp"
        src.write_text(source)
        out = Path(tmp) / "oracle"
        cmd = [compiler(), "-std=c++14", "-O1", "-w", f"-I{headers()}", str(src), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"oracle compile failed:\n{proc.stderr[-4000:]}")
        os.replace(out, exe)
    return exe


_CONVERT = """#include <ap_fixed.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
template <class T> static void run(const double* x, double* y, long n) {
  for (long j = 0; j < n; ++j) { T v(x[j]); y[j] = v.to_double(); }
}
typedef void (*fn)(const double*, double*, long);
static const fn table[] = {
%s
};
// usage: oracle in.bin out.bin -- in.bin: per case an int64 count then that many doubles
int main(int argc, char** argv) {
  FILE* in = std::fopen(argv[1], "rb");
  FILE* out = std::fopen(argv[2], "wb");
  if (!in || !out) return 2;
  for (unsigned c = 0; c < sizeof(table) / sizeof(fn); ++c) {
    long long n;
    if (std::fread(&n, sizeof n, 1, in) != 1) return 3;
    std::vector<double> x(n), y(n);
    if (std::fread(x.data(), sizeof(double), n, in) != (size_t)n) return 4;
    table[c](x.data(), y.data(), n);
    std::fwrite(y.data(), sizeof(double), n, out);
  }
  return 0;
}
"""


def convert(cases: list[tuple[Format, str, str]], inputs: list[np.ndarray],
            cache: Path) -> list[np.ndarray]:
    """Convert ``inputs[c]`` (doubles) to ``cases[c]`` = (format, round, overflow) and back.

    Returns one float64 array per case: exactly what ``T v(x); v.to_double()`` gives.
    """
    table = ",\n".join(f"  &run<{fmt.ap_type(r, o)} >" for fmt, r, o in cases)
    exe = _build(_CONVERT % table, cache)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        with open(src, "wb") as fh:
            for x in inputs:
                np.asarray([len(x)], dtype=np.int64).tofile(fh)
                np.ascontiguousarray(x, dtype=np.float64).tofile(fh)
        proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"oracle run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        flat = np.fromfile(dst, dtype=np.float64)
    out, start = [], 0
    for x in inputs:
        out.append(flat[start:start + len(x)])
        start += len(x)
    return out


_DENSE = """#include <ap_fixed.h>
#include <cstdio>
#include <vector>
typedef %(in_t)s in_t;
typedef %(w_t)s w_t;
typedef %(b_t)s b_t;
typedef %(acc_t)s acc_t;
typedef %(out_t)s out_t;
// y[n, o] = out_t(b[o] + sum_j in_t(x[n, j]) * w[o, j]), accumulated in acc_t
int main(int argc, char** argv) {
  const long N = %(n)d, IN = %(n_in)d, OUT = %(n_out)d;
  std::vector<double> x(N * IN), w(OUT * IN), b(OUT), y(N * OUT);
  FILE* fx = std::fopen(argv[1], "rb");
  if (!fx) return 2;
  if (std::fread(x.data(), sizeof(double), N * IN, fx) != (size_t)(N * IN)) return 3;
  if (std::fread(w.data(), sizeof(double), OUT * IN, fx) != (size_t)(OUT * IN)) return 3;
  if (std::fread(b.data(), sizeof(double), OUT, fx) != (size_t)OUT) return 3;
  std::vector<w_t> wq(OUT * IN);
  std::vector<b_t> bq(OUT);
  for (long k = 0; k < OUT * IN; ++k) wq[k] = w[k];
  for (long o = 0; o < OUT; ++o) bq[o] = b[o];
  for (long n = 0; n < N; ++n) {
    std::vector<in_t> xin(IN);
    for (long j = 0; j < IN; ++j) xin[j] = x[n * IN + j];
    for (long o = 0; o < OUT; ++o) {
      acc_t acc = bq[o];
      for (long j = 0; j < IN; ++j) acc += xin[j] * wq[o * IN + j];
      out_t r = acc;
      y[n * OUT + o] = r.to_double();
    }
  }
  FILE* fy = std::fopen(argv[2], "wb");
  std::fwrite(y.data(), sizeof(double), N * OUT, fy);
  return 0;
}
"""


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray, types: dict[str, str],
          cache: Path) -> np.ndarray:
    """``out_t(b + sum in_t(x) * w_t(w))`` per sample with ap_fixed types (the HLS dense layer).

    Args:
        x: (N, IN) inputs (doubles; converted to ``in_t`` by the library).
        w: (OUT, IN) weights (converted to ``w_t``), b: (OUT,) biases (converted to ``b_t``).
        types: C++ type names for ``in_t``, ``w_t``, ``b_t``, ``acc_t``, ``out_t``.

    Returns:
        (N, OUT) float64: the ``out_t`` values.
    """
    n, n_in = x.shape
    n_out = w.shape[0]
    source = _DENSE % dict(types, n=n, n_in=n_in, n_out=n_out)
    exe = _build(source, cache)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        with open(src, "wb") as fh:
            for a in (x, w, b):
                np.ascontiguousarray(a, dtype=np.float64).tofile(fh)
        proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"oracle run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return np.fromfile(dst, dtype=np.float64).reshape(n, n_out)

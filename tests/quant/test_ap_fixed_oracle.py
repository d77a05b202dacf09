"""Fixed-point semantics proven against the real ``ap_fixed`` library, bit for bit.

Every round mode x every overflow mode x signed/unsigned x a grid of formats (widths 1..24,
negative ``i`` and ``f``, ``i < -f``) on inputs that include exact ties, values that overflow only
after rounding, the saturation edges, +-0, denormals, +-inf, values many periods out, and random
values. Expected values come from a C++ program compiled against the ``ap_types`` headers
(``tests/apfixed.py``). Paths checked: the pure op ``quantize``, the ``FixedPointQuantizer``
module on the torch path and on the fused kernels, and the HGQ quantizer in eval.

NaN is left out: ap_fixed has no NaN (it warns and converts the bit pattern as a huge number);
pquant passes NaN through its saturating modes and maps it to 0 in the wrapping modes, like inf.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pquant.quant.fixed_point import quantize
from tests import apfixed
from tests.apfixed import Format


@pytest.fixture(autouse=True)
def _oracle_available():
    apfixed.require()

ROUNDS = list(apfixed.AP_Q)
OVERFLOWS = list(apfixed.AP_O)

SIGNED = [Format(1, *p) for p in [
    (0, 0), (0, 1), (1, 1), (-1, 1), (-1, 3), (-2, 4), (2, -1), (3, -2), (1, 4), (0, 7),
    (3, 4), (5, -3), (7, 8), (4, 11), (10, 13), (-3, 20), (0, 23), (23, 0), (2, 2), (6, 5),
    (-4, 10), (-5, 5), (-3, 2), (12, 11)]]
UNSIGNED = [Format(0, *p) for p in [
    (0, 1), (1, 1), (2, 3), (-1, 3), (3, -1), (4, 4), (8, 8), (12, 12), (0, 7), (-2, 6),
    (6, 0), (5, -2), (24, 0), (-6, 8)]]
FORMATS = SIGNED + UNSIGNED


def _cases():
    """(format, round, overflow) for every combination ap_fixed has (no unsigned WRAP_SM)."""
    return [(fmt, r, o) for fmt in FORMATS for r in ROUNDS for o in OVERFLOWS
            if fmt.k or o != "WRAP_SM"]


def _inputs(fmt: Format, seed: int) -> np.ndarray:
    """float32 values (as float64) that probe every corner of ``fmt``."""
    step, top = 2.0 ** -fmt.f, 2.0 ** fmt.i_eff
    lo, hi = -fmt.k * top, top - step
    period = 2.0 ** fmt.width * step
    rng = np.random.default_rng(seed)
    centres = [0.0, hi, lo, top, -top, hi + period, lo - period, 2.5 * period, -3 * period,
               period * 1000 + hi, lo - period * 1000]
    offsets = np.arange(-8, 9) * (step / 4)  # grid points, quarter steps, and ties (odd halves)
    pts = [c + offsets for c in centres]
    span = max(period, 4 * step)
    pts.append(rng.uniform(-3 * span, 3 * span, 600))
    pts.append(rng.choice([-1, 1], 200) * np.exp2(rng.uniform(-30, 40, 200)))
    x = np.concatenate(pts).astype(np.float32)
    ties = np.concatenate([c + (np.arange(-6, 6) + 0.5) * step for c in centres]).astype(np.float32)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)),
                           np.nextafter(ties, np.float32(-np.inf))])
    tiny = np.finfo(np.float32).smallest_subnormal
    special = np.array([0.0, -0.0, tiny, -tiny, 3 * tiny, 1e-39, -1e-39,
                        np.finfo(np.float32).tiny, np.inf, -np.inf,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max], dtype=np.float32)
    return np.unique(np.concatenate([x, ties, near, special])).astype(np.float64)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """{(format, round, overflow): (inputs, ap_fixed outputs)} from one compiled program."""
    apfixed.require()  # (module fixtures run before the autouse check)
    cases = _cases()
    inputs = {fmt: _inputs(fmt, seed) for seed, fmt in enumerate(FORMATS)}
    cache = tmp_path_factory.getbasetemp() / "ap_fixed_oracle"
    outs = apfixed.convert(cases, [inputs[fmt] for fmt, _, _ in cases], cache)
    return {case: (inputs[case[0]], out) for case, out in zip(cases, outs)}


def _mismatches(oracle, overflow: str, fn) -> dict:
    """Per (format, round): how many outputs of ``fn`` differ from ap_fixed, with an example."""
    bad = {}
    for (fmt, rnd, ovf), (x, expected) in oracle.items():
        if ovf != overflow:
            continue
        got = fn(fmt, rnd, ovf, torch.from_numpy(x.astype(np.float32))).double().numpy()
        diff = np.flatnonzero(got != expected)
        if diff.size:
            j = diff[0]
            bad[(fmt.k, fmt.i, fmt.f, rnd)] = (diff.size, float(x[j]), float(expected[j]),
                                               float(got[j]))
    return bad


def _report(bad: dict) -> str:
    lines = [f"(k,i,f,round)={key}: {n} mismatches, e.g. x={x!r}: ap_fixed {e!r}, pquant {g!r}"
             for key, (n, x, e, g) in itertools.islice(bad.items(), 12)]
    return f"{len(bad)} combinations differ:\n" + "\n".join(lines)


def _op(fmt, rnd, ovf, x):
    return quantize(x, fmt.k, fmt.i, fmt.f, rnd, ovf, training=False)


def _module(fmt, rnd, ovf, x):
    from pquant.quant.quantizer import FixedPointQuantizer

    return FixedPointQuantizer(fmt.k, fmt.i, fmt.f, rnd, ovf).eval()(x)


def _per_element(fmt, rnd, ovf, x):
    """The same format held as a per-element tensor (the per-channel/per-weight code path)."""
    from pquant.quant.quantizer import FixedPointQuantizer

    q = FixedPointQuantizer(fmt.k, fmt.i, fmt.f, rnd, ovf, shape=tuple(x.shape)).eval()
    return q(x)


def _hgq(fmt, rnd, ovf, x):
    from pquant.quant.hgq import HGQQuantizer

    with torch.no_grad():
        return HGQQuantizer(fmt.k, fmt.i, fmt.f, rnd, ovf).eval()(x)


PATHS = {"op": _op, "module": _module, "per_element": _per_element, "hgq": _hgq}


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("path", list(PATHS))
def test_torch_path_matches_ap_fixed(oracle, monkeypatch, path, overflow):
    from pquant import kernels

    monkeypatch.setenv("PQUANT_KERNELS", "off")
    kernels.reset()
    try:
        bad = _mismatches(oracle, overflow, PATHS[path])
    finally:
        kernels.reset()
    assert not bad, _report(bad)


@pytest.mark.parametrize("overflow", ["SAT", "SAT_SYM"])
@pytest.mark.parametrize("path", ["module", "per_element", "hgq"])
def test_fused_kernels_match_ap_fixed(oracle, monkeypatch, path, overflow):
    """The fused CPU kernels (saturating modes; wrapping modes take the torch path)."""
    from pquant import kernels

    kernels.reset()
    try:
        if kernels.get() is None:
            pytest.skip(f"fused kernels unavailable: {kernels.status()}")
        bad = _mismatches(oracle, overflow, PATHS[path])
    finally:
        kernels.reset()
    assert not bad, _report(bad)


def test_oracle_covers_the_grid():
    widths = {fmt.width for fmt in FORMATS}
    assert min(widths) == 1 and max(widths) == 24
    assert any(fmt.i < 0 for fmt in SIGNED) and any(fmt.i < 0 for fmt in UNSIGNED)
    assert any(fmt.f < 0 for fmt in SIGNED) and any(fmt.f < 0 for fmt in UNSIGNED)
    assert any(fmt.i < -fmt.f for fmt in FORMATS)  # the i_eff floor
    assert len(_cases()) == len(SIGNED) * 28 + len(UNSIGNED) * 21

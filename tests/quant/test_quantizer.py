"""The stateful quantizer module."""

from __future__ import annotations

import copy

import pytest
import torch

from pquant.quant.fixed_point import quantize
from pquant.quant.quantizer import FixedPointQuantizer, QuantSpec


def test_module_matches_pure_op_in_train_and_eval():
    x = torch.randn(64, 8) * 4
    for ovf in ("SAT", "SAT_SYM", "WRAP", "WRAP_SM"):
        for rnd in ("TRN", "RND", "RND_CONV", "RND_INF"):
            q = FixedPointQuantizer(1, 2, 3, rnd, ovf)
            for training in (True, False):
                q.train(training)
                assert torch.equal(q(x), quantize(x, 1, 2, 3, rnd, ovf, training))


def test_state_dict_round_trip_and_refresh():
    q = FixedPointQuantizer(1, 2, 3)
    q2 = FixedPointQuantizer(0, 0, 1)
    q2.load_state_dict(q.state_dict())
    x = torch.linspace(-5, 5, 101)
    assert torch.equal(q2(x), q(x))
    assert q2.spec == QuantSpec(1, 2, 3)


def test_set_format_changes_output_and_bits():
    q = FixedPointQuantizer(1, 0, 7)
    x = torch.tensor([0.3, 1.7])
    q.set_format(i=1, f=2)
    assert q(x).tolist() == [0.25, 1.75]
    assert float(q.bits()) == 4


def test_disabled_is_identity():
    q = FixedPointQuantizer(1, 0, 2)
    q.enabled = False
    x = torch.randn(10)
    assert q(x) is x


def test_per_channel_shape():
    q = FixedPointQuantizer(1, 0, 7, shape=(4, 1))
    q.set_format(f=torch.tensor([[7.0], [6.0], [5.0], [4.0]]))
    w = torch.randn(4, 3) * 0.3
    out = q(w)
    for row, f in enumerate((7, 6, 5, 4)):
        assert torch.equal(out[row], quantize(w[row], 1, 0, f))
    assert q.spec is None


def test_bypass_lapses_when_a_format_it_depends_on_changes():
    a = FixedPointQuantizer(1, 2, 3)
    b = FixedPointQuantizer(1, 2, 3)
    unrelated = FixedPointQuantizer(1, 2, 3)
    a.grant_bypass([b])  # (b puts a's input on a's grid)
    assert a.bypass
    x = torch.tensor([0.3])
    assert a(x) is x
    c = FixedPointQuantizer(1, 1, 1)  # creating a quantizer changes no format
    unrelated.set_format(f=4)  # a format a does not depend on: no process-global epoch
    assert a.bypass
    b.set_format(f=4)
    assert not a.bypass
    assert a(x).item() == 0.25
    a.bypass = True  # (granted on its own format only)
    assert a.bypass
    a.set_format(f=4)
    assert not a.bypass
    del c


def test_bypass_survives_device_moves_and_copies():
    a = FixedPointQuantizer(1, 2, 3)
    a.bypass = True
    a.to(torch.float32)
    assert a.bypass
    assert copy.deepcopy(a).bypass


def test_bypass_lapses_when_enabled_toggles():
    a = FixedPointQuantizer(1, 2, 3)
    b = FixedPointQuantizer(1, 2, 3)
    a.grant_bypass([b])
    b.enabled = False
    assert not a.bypass


def test_spec_checks():
    with pytest.raises(ValueError, match="keep_negatives must be 0 or 1"):
        QuantSpec(2, 1, 1).check()
    with pytest.raises(ValueError, match="at least 1 bit"):
        QuantSpec(0, 0, 0).check("fc1 (input)")
    QuantSpec(0, 2, -1).check()  # 1 bit wide: values {0, 2} (step 2), allowed


"""The pure fixed-point op: hand-computed tables for every round and overflow mode, STE."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pquant.quant.fixed_point import bit_width, format_range, quantize, round_codes
from pquant.quant.modes import OverflowMode, RoundMode

TIES = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
ROUND_TABLE = {  # tie behaviour of every mode on z = (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)
    "TRN": [-3, -2, -1, 0, 1, 2],
    "RND": [-2, -1, 0, 1, 2, 3],
    "RND_CONV": [-2, -2, 0, 0, 2, 2],
    "TRN_ZERO": [-2, -1, 0, 0, 1, 2],
    "RND_ZERO": [-2, -1, 0, 0, 1, 2],
    "RND_MIN_INF": [-3, -2, -1, 0, 1, 2],
    "RND_INF": [-3, -2, -1, 1, 2, 3],
}
NON_TIES = torch.tensor([-1.7, -1.2, -0.2, 0.2, 1.2, 1.7])
NON_TIE_TABLE = {
    "TRN": [-2, -2, -1, 0, 1, 1],
    "TRN_ZERO": [-1, -1, 0, 0, 1, 1],
}


@pytest.mark.parametrize("mode", list(ROUND_TABLE))
def test_round_modes_on_ties(mode):
    expected = torch.tensor(ROUND_TABLE[mode], dtype=torch.float32)
    # integer grid (f = 0), wide range so nothing saturates
    assert torch.equal(quantize(TIES, 1, 8, 0, mode), expected)
    assert torch.equal(round_codes(TIES, mode), expected)


@pytest.mark.parametrize("mode", list(ROUND_TABLE))
def test_round_modes_off_ties(mode):
    nearest = [-2, -1, 0, 0, 1, 2]
    expected = torch.tensor(NON_TIE_TABLE.get(mode, nearest), dtype=torch.float32)
    assert torch.equal(quantize(NON_TIES, 1, 8, 0, mode), expected)


def test_round_modes_scale_with_fractional_bits():
    # f = 2: the grid is 0.25; ties at odd multiples of 0.125
    x = torch.tensor([-0.375, -0.125, 0.125, 0.375])
    assert quantize(x, 1, 3, 2, "RND").tolist() == [-0.25, 0.0, 0.25, 0.5]
    assert quantize(x, 1, 3, 2, "RND_CONV").tolist() == [-0.5, 0.0, 0.0, 0.5]
    assert quantize(x, 1, 3, 2, "TRN").tolist() == [-0.5, -0.25, 0.0, 0.25]


X_RANGE = torch.arange(-3.0, 3.01, 0.5)  # -3 .. 3 step 0.5
OVERFLOW_EVAL = {  # k=1, i=1, f=1 (range [-2, 1.5]), RND
    "SAT": [-2, -2, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 1.5, 1.5, 1.5],
    "SAT_SYM": [-1.5, -1.5, -1.5, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 1.5, 1.5, 1.5],
    "WRAP": [1.0, 1.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, -2, -1.5, -1],
    # reflecting wrap: past the top the code walks back down, the extremes repeat
    "WRAP_SM": [-1.5, -2, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 1.5, 1.0, 0.5],
}


@pytest.mark.parametrize("mode", list(OVERFLOW_EVAL))
def test_overflow_modes_eval(mode):
    got = quantize(X_RANGE, 1, 1, 1, "RND", mode, training=False)
    assert got.tolist() == OVERFLOW_EVAL[mode]


@pytest.mark.parametrize("mode", ["WRAP", "WRAP_SM"])
def test_wrapping_modes_do_not_wrap_in_training(mode):
    got = quantize(X_RANGE, 1, 1, 1, "RND", mode, training=True)
    assert torch.equal(got, X_RANGE)  # on the grid already: rounding is the identity


@pytest.mark.parametrize("mode", ["SAT", "SAT_SYM"])
def test_saturating_modes_identical_in_train_and_eval(mode):
    assert torch.equal(quantize(X_RANGE, 1, 1, 1, "RND", mode, training=True),
                       quantize(X_RANGE, 1, 1, 1, "RND", mode, training=False))


def test_unsigned_formats_k0():
    # k=0, i=1, f=1: range [0, 1.5]
    x = torch.tensor([-1.0, -0.2, 0.0, 0.7, 1.0, 1.6, 3.0])
    assert quantize(x, 0, 1, 1, "RND", "SAT").tolist() == [0, 0, 0, 0.5, 1.0, 1.5, 1.5]
    assert quantize(x, 0, 1, 1, "RND", "SAT_SYM").tolist() == [0, 0, 0, 0.5, 1.0, 1.5, 1.5]
    # WRAP on 2 bits of range: modulo 2 -> [0, 2)
    assert quantize(x, 0, 1, 1, "RND", "WRAP").tolist() == [1.0, 0.0, 0.0, 0.5, 1.0, 1.5, 1.0]


def test_wrap_sm_is_refused_for_unsigned_formats():
    # ap_ufixed<..., AP_WRAP_SM> does not exist (the library stops: "cannot support AP_WRAP_SM")
    from pquant.quant.hgq import HGQQuantizer
    from pquant.quant.quantizer import FixedPointQuantizer

    x = torch.tensor([1.0, 0.5, 2.0])
    for build in (lambda: quantize(x, 0, 1, 1, "RND", "WRAP_SM"),
                  lambda: quantize(x, torch.tensor([1.0, 0.0, 1.0]), 1, 1, "RND", "WRAP_SM"),
                  lambda: FixedPointQuantizer(0, 1, 1, "RND", "WRAP_SM"),
                  lambda: HGQQuantizer(0, 1, 1, "RND", "WRAP_SM")):
        with pytest.raises(ValueError, match="WRAP_SM needs a signed format"):
            build()
    assert quantize(x, 0, 1, 1, "RND", "WRAP").tolist() == [1.0, 0.5, 0.0]  # WRAP is fine


# Counterexamples found with the ap_fixed library (tests/quant/test_ap_fixed_oracle.py runs the
# whole grid); kept here so they run without a compiler.
@pytest.mark.parametrize("x, k, i, f, rnd, ovf, expected", [
    (3.9709, 1, 1, 4, "RND", "WRAP_SM", 0.0),        # ap_fixed<6,2,AP_RND,AP_WRAP_SM>
    (1.8360, 1, 0, 1, "RND", "WRAP_SM", 0.0),        # ap_fixed<2,1,AP_RND,AP_WRAP_SM>
    (-4.0, 1, 1, 1, "TRN", "WRAP_SM", -0.5),         # ap_fixed<3,2,AP_TRN,AP_WRAP_SM>
    (-5.0, 1, 1, 1, "TRN", "WRAP_SM", 0.5),
    (1.75, 1, 1, 2, "RND_CONV", "WRAP_SM", 1.75),     # in range: unchanged
    (0.49999997, 1, 3, 0, "RND", "SAT", 0.0),        # floor(z + 0.5) rounds the sum up to 1
    (-0.49999997, 1, 3, 0, "RND_MIN_INF", "SAT", 0.0),
    (-0.49999997, 1, 3, 0, "RND_INF", "SAT", 0.0),
    (4096.0, 0, 12, 12, "RND", "SAT", 4096 - 2**-12),  # 24-bit grid as fine as float32's
    (-1.4e-45, 1, 2, -1, "TRN", "SAT", -2.0),        # x * 2**f underflows to -0
    (-0.7, 1, 0, 0, "TRN", "SAT_SYM", -1.0),          # 1-bit signed SAT_SYM saturates to -1
    (-5.44592297984e11, 1, 0, 1, "RND", "WRAP", 0.0),  # wrap exact far out
    (float("inf"), 1, 2, 2, "RND", "WRAP", 0.0),
    (float("-inf"), 1, 2, 2, "RND", "WRAP_SM", 0.0),
])
def test_ap_fixed_counterexamples(x, k, i, f, rnd, ovf, expected):
    got = quantize(torch.tensor([x]), k, i, f, rnd, ovf, training=False)
    assert got.item() == expected


def test_wrap_sm_matches_vitis_examples():
    # ap_fixed<4,4,AP_RND,AP_WRAP_SM>: 19 -> -4, -19 -> 2 (Vitis HLS user guide)
    got = quantize(torch.tensor([19.0, -19.0, 8.0, 24.0]), 1, 3, 0, "RND", "WRAP_SM")
    assert got.tolist() == [-4.0, 2.0, 7.0, -8.0]


def test_negative_fractional_bits_coarse_grid():
    # f = -2: step 4, i = 4: range [-16, 12]
    x = torch.tensor([-20.0, -5.0, 1.0, 2.0, 6.0, 13.0])
    assert quantize(x, 1, 4, -2, "RND").tolist() == [-16.0, -4.0, 0.0, 4.0, 8.0, 12.0]


def test_integer_bits_are_floored_at_minus_f():
    # i = -5 < -f = -2: i_eff = -2, range [-0.25, 0] with step 0.25
    x = torch.tensor([-1.0, -0.1, 0.2])
    assert quantize(x, 1, -5, 2).tolist() == [-0.25, 0.0, 0.0]
    assert bit_width(1, -5, 2) == 1


def test_negative_integer_bits_fine_grid():
    # i = -2, f = 5: range [-0.25, 0.25 - 1/32]
    lo, hi = format_range(1, -2, 5)
    assert (lo, hi) == (-0.25, 0.25 - 2**-5)
    assert quantize(torch.tensor([0.3, -0.3, 0.1]), 1, -2, 5).tolist() == [hi, lo, 0.09375]


def test_format_range_table():
    assert format_range(1, 3, 4) == (-8.0, 8.0 - 1 / 16)
    assert format_range(0, 3, 5) == (0.0, 8.0 - 1 / 32)
    assert format_range(1, 0, 7, "SAT_SYM") == (-(1 - 2**-7), 1 - 2**-7)


def test_ste_gradient_of_input():
    x = torch.tensor([0.3, 5.0, -5.0, 0.12, 1.75, -2.0, 1.76], requires_grad=True)
    y = quantize(x, 1, 1, 2)  # range [-2, 1.75], step 0.25
    y.sum().backward()
    assert y.tolist() == [0.25, 1.75, -2.0, 0.0, 1.75, -2.0, 1.75]
    # 1 inside [lo, hi] (bounds included), 0 where clipped
    assert x.grad.tolist() == [1, 0, 0, 1, 1, 1, 0]


def test_ste_gradient_wrap_training_is_identity():
    x = torch.tensor([0.3, 5.0, -5.0], requires_grad=True)
    quantize(x, 1, 1, 2, overflow_mode="WRAP", training=True).sum().backward()
    assert x.grad.tolist() == [1, 1, 1]


def test_learnable_bits_get_gradients():
    f = torch.tensor(2.0, requires_grad=True)
    i = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([0.3, 5.0, -5.0, 0.12], requires_grad=True)
    y = quantize(x, 1, i, f)
    y.sum().backward()
    assert y.tolist() == [0.25, 1.75, -2.0, 0.0]
    assert x.grad.tolist() == [1, 0, 0, 1]
    # rounding error -ln2 * (q - x) summed over the unclipped values + the upper bound's df
    expected_f = -math.log(2) * ((0.25 - 0.3) + (0.0 - 0.12)) + math.log(2) * 2**-2
    assert f.grad.item() == pytest.approx(expected_f, rel=1e-5)
    # upper bound 2**i - 2**-f and lower bound -2**i
    assert i.grad.item() == pytest.approx(math.log(2) * 2 - math.log(2) * 2, abs=1e-6)


def test_learnable_and_constant_paths_agree_in_value():
    torch.manual_seed(0)
    x = torch.randn(100) * 3
    for mode in ROUND_TABLE:
        for ovf in ("SAT", "SAT_SYM", "WRAP", "WRAP_SM"):
            f = torch.tensor(3.0, requires_grad=True)
            a = quantize(x, 1, 2, 3, mode, ovf)
            b = quantize(x, 1, 2.0, f, mode, ovf)
            assert torch.equal(a, b.detach()), (mode, ovf)


def test_per_channel_tensors_match_per_tensor_calls():
    torch.manual_seed(1)
    w = torch.randn(4, 6)
    i = torch.tensor([[0.0], [1.0], [2.0], [-1.0]])
    f = torch.tensor([[7.0], [6.0], [5.0], [8.0]])
    got = quantize(w, 1, i, f)
    for row in range(4):
        ref = quantize(w[row], 1, float(i[row]), float(f[row]))
        assert torch.equal(got[row], ref)


def test_per_channel_gradient_mask():
    x = torch.tensor([[0.5, 3.0], [0.5, 3.0]], requires_grad=True)
    i = torch.tensor([[0.0], [2.0]])
    quantize(x, 1, i, 2).sum().backward()
    assert x.grad.tolist() == [[1, 0], [1, 1]]


def test_does_not_modify_input():
    x = torch.randn(50)
    before = x.clone()
    for ovf in ("SAT", "WRAP", "WRAP_SM"):
        quantize(x, 1, 1, 2, "RND", ovf)
    assert torch.equal(x, before)


def test_unknown_modes_are_rejected_with_allowed_values():
    with pytest.raises(ValueError, match=r"round_mode must be one of \[TRN, RND"):
        quantize(torch.zeros(1), 1, 1, 1, round_mode="NEAREST")
    with pytest.raises(ValueError, match=r"overflow_mode must be one of \[SAT"):
        quantize(torch.zeros(1), 1, 1, 1, overflow_mode="CLIP")


def test_enum_members_accepted():
    x = torch.tensor([0.26])
    assert quantize(x, 1, 1, 2, RoundMode.TRN, OverflowMode.SAT).item() == 0.25


formats = st.tuples(st.sampled_from([0, 1]), st.integers(-3, 6), st.integers(-2, 8)).filter(
    lambda kif: bit_width(*kif) >= 1)


@settings(max_examples=150, deadline=None)
@given(kif=formats, mode=st.sampled_from(list(ROUND_TABLE)),
       ovf=st.sampled_from(["SAT", "SAT_SYM"]),
       values=st.lists(st.floats(-300, 300, allow_nan=False, width=32), min_size=1,
                       max_size=20))
def test_invariants_on_grid_in_range_idempotent(kif, mode, ovf, values):
    k, i, f = kif
    x = torch.tensor(values, dtype=torch.float32)
    y = quantize(x, k, i, f, mode, ovf)
    lo, hi = format_range(k, i, f, ovf)
    assert (y >= lo).all() and (y <= hi).all()
    codes = y * 2.0**f
    assert torch.equal(codes, torch.round(codes))  # on the grid
    assert torch.equal(quantize(y, k, i, f, mode, ovf), y)  # idempotent
    # monotone
    order = torch.argsort(x)
    assert (torch.diff(y[order]) >= 0).all()
    # nearest modes never move a value by more than half a step (inside the range)
    if mode not in ("TRN", "TRN_ZERO"):
        inside = (x >= lo) & (x <= hi)
        assert ((y - x).abs()[inside] <= 2.0 ** (-f) / 2 + 1e-6).all()


def test_learnable_wrap_eval_maps_inf_to_zero_and_broadcasts():
    f = torch.tensor(2.0, requires_grad=True)
    got = quantize(torch.tensor([math.inf, -math.inf, 1.25]), torch.tensor(1.0),
                   torch.tensor(2.0), f, "RND", "WRAP")
    assert got.tolist() == [0.0, 0.0, 1.25]
    fb = torch.full((3, 4), 2.0, requires_grad=True)
    out = quantize(torch.linspace(-9, 9, 4), 1, 2, fb, "TRN", "WRAP")
    assert out.shape == (3, 4)

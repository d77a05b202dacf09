"""BOPs and EBOPs -- the one implementation (the HGQ loss and the report both call it).

All costs are per sample (batch 1) and differentiable with respect to the bit tensors, so HGQ can
minimise them. Bit tensors may be scalars (per tensor) or per element/channel/feature.

* Dense / Conv: every multiply-accumulate costs ``b_in * b_w``; a convolution repeats its kernel
  at every output position (``P_out``), a dense layer on ``(..., F)`` inputs at every leading
  position. A pruned (zero) weight costs nothing in EBOPs; BOPs count the dense layer. The bias is
  added once per output: ``P_out * sum_o b_bias[o]``.
* AvgPool: every output sums ``taps`` inputs: ``P_out * taps * sum_c b_in[c]``.
* BatchNorm / LayerNorm: one multiply and one add per element:
  ``sum_e (b_in[e] * b_gamma[e] + b_beta[e])``.
* Activations: ReLU-like functions (relu, leaky relu, hard tanh) are comparisons/shifts: 0.
  Others are lookup tables: ``1e-4 * sum_e 2**b_in[e] * b_out[e]`` (HGQ's LUT cost model).
"""

from __future__ import annotations

import torch

LUT_SCALE = 1e-4


def _as_tensor(bits, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(bits, dtype=like.dtype, device=like.device)


def _mac_cost(mac_bits: torch.Tensor, kept: torch.Tensor, bias_bits, positions: int,
              bops: bool = True):
    mac_bits = mac_bits.expand(kept.shape) if mac_bits.dim() else mac_bits * torch.ones_like(kept)
    bias = 0.0
    if bias_bits is not None:
        bias_bits = _as_tensor(bias_bits, kept)
        per_output = bias_bits.expand(kept.shape[0]) if bias_bits.dim() == 0 else bias_bits
        bias = positions * per_output.reshape(-1).sum()
    ebops = positions * (mac_bits * kept).sum() + bias
    return (positions * mac_bits.sum() + bias if bops else None), ebops


def linear_cost(weight_bits, input_bits, kept: torch.Tensor, bias_bits, positions: int,
                bops: bool = True):
    """(BOPs, EBOPs) of ``y = W x + b`` at ``positions`` positions (BOPs None if not ``bops``).

    Args:
        weight_bits: scalar, ``(O, 1)`` or ``(O, I)`` bits per weight.
        input_bits: scalar or ``(I,)`` bits per input feature.
        kept: ``(O, I)``, 1 where the weight is non-zero.
        bias_bits: scalar or ``(O,)``, or None without bias.
        positions: number of output positions per sample.
    """
    wb, ib = _as_tensor(weight_bits, kept), _as_tensor(input_bits, kept)
    return _mac_cost(wb * ib.reshape(-1) if ib.dim() else wb * ib, kept, bias_bits, positions,
                     bops)


def conv_cost(weight_bits, input_bits, kept: torch.Tensor, bias_bits, out_positions: int,
              groups: int = 1, bops: bool = True):
    """(BOPs, EBOPs) of a convolution with weight ``(O, C/groups, *kernel)`` (BOPs None if not
    ``bops``).

    Args:
        weight_bits: scalar or broadcastable to the weight.
        input_bits: scalar or one value per input channel (``C`` elements, any shape).
        kept: weight-shaped, 1 where the weight is non-zero.
        bias_bits: scalar or ``(O,)``, or None.
        out_positions: number of output positions (product of the output's spatial sizes).
        groups: convolution groups.
    """
    wb, ib = _as_tensor(weight_bits, kept), _as_tensor(input_bits, kept)
    if ib.numel() > 1:
        out_ch, in_per_group = kept.shape[0], kept.shape[1]
        per_group = ib.reshape(groups, 1, in_per_group).expand(groups, out_ch // groups,
                                                                in_per_group)
        ib = per_group.reshape(out_ch, in_per_group, *([1] * (kept.dim() - 2)))
    return _mac_cost(wb * ib, kept, bias_bits, out_positions, bops)


def pool_cost(input_bits, channels: int, out_positions: int, taps: int) -> torch.Tensor:
    """EBOPs (= BOPs) of average pooling: every output adds ``taps`` inputs."""
    ib = torch.as_tensor(input_bits, dtype=torch.float32)
    per_channel = ib.reshape(-1).expand(channels) if ib.numel() == 1 else ib.reshape(-1)
    return out_positions * taps * per_channel.sum()


def _per_element(bits, sample_shape: tuple[int, ...], channel_dim: int | None) -> torch.Tensor:
    """Broadcast bits (scalar, per channel or per element) over a per-sample tensor."""
    b = torch.as_tensor(bits, dtype=torch.float32)
    if b.numel() == 1:
        return b.reshape(()).expand(sample_shape)
    if channel_dim is not None and b.numel() == sample_shape[channel_dim]:
        view = [1] * len(sample_shape)
        view[channel_dim] = -1
        return b.reshape(view).expand(sample_shape)
    return b.expand(sample_shape)


def norm_cost(input_bits, scale_bits, shift_bits, sample_shape: tuple[int, ...],
              channel_dim: int | None = 0) -> torch.Tensor:
    """EBOPs of an affine normalisation: ``b_in * b_gamma + b_beta`` per element.

    Args:
        sample_shape: per-sample input shape (e.g. ``(C, H, W)`` for BatchNorm2d).
        channel_dim: dimension the per-channel bits vary along (0 for BatchNorm, None when
            they are per element of the trailing normalised shape, as in LayerNorm).
    """
    b_in = _per_element(input_bits, sample_shape, channel_dim)
    total = (b_in * _per_element(scale_bits, sample_shape, channel_dim)).sum()
    if shift_bits is not None:
        total = total + _per_element(shift_bits, sample_shape, channel_dim).sum()
    return total


def lut_cost(input_bits, output_bits, sample_shape: tuple[int, ...],
             channel_dim: int | None = None) -> torch.Tensor:
    """EBOPs of an element-wise function implemented as a lookup table."""
    b_in = _per_element(input_bits, sample_shape, channel_dim)
    b_out = _per_element(output_bits, sample_shape, channel_dim)
    return LUT_SCALE * (torch.exp2(b_in) * b_out).sum()

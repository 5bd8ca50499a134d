"""FLOPs of convolutions as XLA counts them: 2 per multiply-add of a kernel tap that falls inside the input
(taps on zero padding are not work), so the analytic counts of the models match `cost_analysis()`."""

from __future__ import annotations


def _valid_taps(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """(output length, kernel taps inside the input summed over the outputs) along one axis."""
    out = (size + 2 * pad - kernel) // stride + 1
    taps = sum(sum(0 <= o * stride - pad + i < size for i in range(kernel)) for o in range(out))
    return out, taps


def conv2d(height: int, width: int, kernel: int, stride: int, pad: int, in_features: int,
           out_features: int) -> tuple[int, int, int]:
    """(output height, output width, FLOPs) of a square-kernel 2-D convolution."""
    out_h, taps_h = _valid_taps(height, kernel, stride, pad)
    out_w, taps_w = _valid_taps(width, kernel, stride, pad)
    return out_h, out_w, 2 * taps_h * taps_w * in_features * out_features

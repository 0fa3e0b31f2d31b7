"""Report 1.c-1.f: output-size arithmetic of conv and pooling layers; impossible sizes raise ValueError."""
from __future__ import annotations


def _require_int(minimum: int, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _whole(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"{what} = {numerator}/{denominator} is not a whole number")
    return numerator // denominator


def same_padding(kernel_size: int, stride: int = 1, width: int | None = None) -> int:
    """P = ((S-1)W + K - S)/2, the padding that makes the output as wide as the input."""
    _require_int(1, kernel_size=kernel_size, stride=stride)
    what = f"padding ((S-1)W + K - S)/2 for K={kernel_size}, S={stride}"
    if width is None:
        if stride != 1:
            raise ValueError("with stride > 1 the size-keeping padding depends on the width: pass width")
        width_term = 0  # S-1 = 0, so any width gives the same padding
    else:
        _require_int(1, width=width)
        width_term, what = (stride - 1) * width, f"{what}, W={width}"
    return _whole(width_term + kernel_size - stride, 2, what)


def kernel_size_for(input_size: int, output_size: int, padding: int = 0, stride: int = 1) -> int:
    """K = I + 2P + S - O·S, the kernel that maps an I-wide input to an O-wide output."""
    _require_int(1, input_size=input_size, output_size=output_size, stride=stride)
    _require_int(0, padding=padding)
    kernel = input_size + 2 * padding + stride - output_size * stride
    if kernel < 1:
        raise ValueError(f"no kernel maps {input_size} to {output_size} with P={padding}, "
                         f"S={stride}: K = I + 2P + S - O·S = {kernel} < 1")
    return kernel


def conv_output_size(input_size: int, kernel_size: int, padding: int = 0, stride: int = 1) -> int:
    """O = (I - K + 2P)/S + 1; unlike PyTorch (which floors) a kernel that does not tile is an error."""
    _require_int(1, input_size=input_size, kernel_size=kernel_size, stride=stride)
    _require_int(0, padding=padding)
    span = input_size - kernel_size + 2 * padding
    if span < 0:
        raise ValueError(f"kernel {kernel_size} is larger than the padded input "
                         f"{input_size + 2 * padding}")
    return _whole(span, stride, f"(I - K + 2P)/S for I={input_size}, K={kernel_size}, "
                                f"P={padding}, S={stride}") + 1


def pooled_size(input_size: int, pool: int, stride: int | None = None) -> int:
    """Pooling is a kernel without weights and without padding: the same formula (report 1.e)."""
    return conv_output_size(input_size, pool, 0, pool if stride is None else stride)

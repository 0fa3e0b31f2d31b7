"""Report 1.a: a zero-padded 2-D convolution written as loops, to check against torch's conv2d."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# report 1.a: a 3x5 image (pixels 0..7), the Sobel-x kernel, zero padding 1 keeps the 3x5 size
IMAGE = np.array([[1, 0, 2, 3, 1], [3, 2, 0, 7, 0], [0, 6, 1, 1, 4]])
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
PADDING = 1
REPORT_RESULT = np.array([[2, -1, 11, -2, -13], [10, -4, 8, 2, -18], [14, -1, -5, 6, -9]])
# The report's derivation line for element (3, 3) (1-based) ends in "= -1"; its products and its
# matrix say -5.
REPORT_DERIVATION_TYPOS = {(3, 3): -1}


def window_terms(padded, kernel, row: int, col: int) -> list[tuple[int, int]]:
    """The (pixel, weight) pairs summed into output element (row, col), in reading order."""
    kh, kw = kernel.shape
    return [(int(padded[row + i, col + j]), int(kernel[i, j]))
            for i in range(kh) for j in range(kw)]


def cross_correlate(image, kernel, padding: int):
    """What deep learning calls convolution (and F.conv2d computes): the kernel is not flipped."""
    padded = np.pad(image, padding)
    out = np.zeros((padded.shape[0] - kernel.shape[0] + 1, padded.shape[1] - kernel.shape[1] + 1),
                   dtype=np.result_type(image, kernel))
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] = sum(p * w for p, w in window_terms(padded, kernel, row, col))
    return out


def convolve(image, kernel, padding: int):
    """True (mathematical) convolution: cross-correlation with the kernel rotated by 180 degrees."""
    return cross_correlate(image, kernel[::-1, ::-1], padding)


def torch_conv2d(image, kernel, padding: int):
    def as_batch(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)[None, None]
    return F.conv2d(as_batch(image), as_batch(kernel), padding=padding)[0, 0].numpy()


def format_terms(terms) -> str:
    """'0·(-1) + 0·0 + ...' as the report writes it: negative numbers in parentheses."""
    def number(v):
        return f"({v})" if v < 0 else str(v)
    return " + ".join(f"{number(p)}·{number(w)}" for p, w in terms)

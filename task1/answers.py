"""The text of each task 1 answer (1.a-1.g) with its working, computed from the other modules."""
from __future__ import annotations

import numpy as np

from common.models import CNN1g, count_parameters
from task1 import convolution as conv
from task1.invariance import BLUR, SEED, SHIFT, shift_table
from task1.layer_table import layer_rows, shape_text, totals
from task1.sizes import conv_output_size, kernel_size_for, pooled_size, same_padding
from task1.text import format_matrix, format_table, paragraph

FEATURE_MAPS = 12  # report 1.e/1.f: the first convolutional layer has 12 filters


def answer_1a() -> str:
    padded = np.pad(conv.IMAGE, conv.PADDING)
    result = conv.cross_correlate(conv.IMAGE, conv.SOBEL_X, conv.PADDING)
    true_convolution = conv.convolve(conv.IMAGE, conv.SOBEL_X, conv.PADDING)
    lines = ["Image I (3x5, pixels 0..7):", format_matrix(conv.IMAGE),
             "Sobel-x kernel K:", format_matrix(conv.SOBEL_X),
             f"Zero padding {conv.PADDING} keeps the 3x5 size:", format_matrix(padded),
             "Each output element is the sum of the nine products of its 3x3 window and K",
             "(row, column, 1-based):"]
    for row, col in np.ndindex(result.shape):
        terms = conv.window_terms(padded, conv.SOBEL_X, row, col)
        lines.append(f"  ({row + 1},{col + 1}) {conv.format_terms(terms)} = {result[row, col]}")
    for (row, col), stated in conv.REPORT_DERIVATION_TYPOS.items():
        lines.append(paragraph(f"Note: the report's line for ({row},{col}) ends in \"= {stated}\", but its nine "
                     f"products sum to {result[row - 1, col - 1]}, as its matrix says: a typo in "
                     "the line, not in the matrix."))
    lines += ["Result (3x5):", format_matrix(result),
              f"  equals the report's matrix: {np.array_equal(result, conv.REPORT_RESULT)}; "
              "equals torch.nn.functional.conv2d: "
              f"{np.array_equal(result, conv.torch_conv2d(conv.IMAGE, conv.SOBEL_X, conv.PADDING))}",
              "This is cross-correlation (the kernel slides unflipped), which is what deep-learning",
              "libraries call convolution. True convolution rotates K by 180 degrees first; the",
              "rotated Sobel-x kernel is -K, so true convolution gives the negation:",
              format_matrix(true_convolution),
              "The report's matrix is the cross-correlation, not the true convolution."]
    return "\n".join(lines)


def answer_1b() -> str:
    rows = shift_table()

    def number(value):
        return "-" if value is None else f"{value:.3f}"

    table = format_table(
        ["Layer", "Output", "change", "shift undone", "subsample instead"],
        [[r.name, shape_text(r.output_shape), number(r.change), number(r.change_shift_undone),
          number(r.change_if_subsampled)] for r in rows])
    image, conv1, relu1, pool1 = rows[:4]
    pools = [r for r in rows if r.change_if_subsampled is not None]
    return "\n".join([
        f"A smooth random 3x32x32 texture (white noise, box-blurred {BLUR}x{BLUR}, seed {SEED}) is",
        f"shifted {SHIFT} pixel to the right; both images go through the conv/ReLU/max-pool stages",
        f"of the 1.g network (untrained weights, seed {SEED}). torch.roll and circular padding make",
        "the shift lose no pixels at the border.",
        "  change            = ||f(shifted image) - f(image)|| / ||f(image)||",
        "  shift undone      = the same after shifting f(shifted image) back; '-' once the shift",
        "                      is no longer a whole pixel (after the first 2x2 pool it is 1/2 pixel)",
        "  subsample instead = the change if the max-pool only kept every 2nd pixel (no max)",
        table,
        "What the numbers show:",
        paragraph(f"Convolution: its output changes about as much as its input ({image.change:.3f} "
                  f"-> {conv1.change:.3f}), but shifting it back gives "
                  f"{conv1.change_shift_undone:.3f}: the features move with the image "
                  "(equivariance), they do not stay put (invariance).", bullet="- "),
        paragraph(f"ReLU: pointwise, so equally equivariant ({relu1.change_shift_undone:.3f} when "
                  f"shifted back), and its change stays about the same ({conv1.change:.3f} -> "
                  f"{relu1.change:.3f}): it adds no invariance.", bullet="- "),
        paragraph(f"Max pooling: the change drops ({relu1.change:.3f} -> {pool1.change:.3f}), while "
                  f"plain subsampling would keep it at {pool1.change_if_subsampled:.3f}: the max "
                  "over each 2x2 window absorbs part of the shift. One pool gives partial "
                  f"invariance; it builds up with depth: after {len(pools)} pools the change is "
                  f"{pools[-1].change:.3f}, from {image.change:.3f} at the input.", bullet="- "),
    ])


def answer_1c() -> str:
    k, s = 5, 1  # report 1.c: 5x5 kernel, stride 1
    return (f"Padding that keeps the size: P = ((S-1)W + K - S)/2\n"
            f"  K={k}, S={s}: P = (({s}-1)·W + {k} - {s})/2 = {same_padding(k, s)} "
            "(for any width W, as S-1 = 0)")


def answer_1d() -> str:
    i, o, p, s = 512, 504, 0, 1  # report 1.d
    k = kernel_size_for(i, o, p, s)
    return (f"O = (I - K + 2P)/S + 1 solved for the kernel: K = I + 2P + S - O·S\n"
            f"  K = {i} + 2·{p} + {s} - {o}·{s} = {k}, a {k}x{k} kernel")


def answer_1e() -> str:
    i, k, s = 504, 2, 2  # report 1.e: 2x2 max-pool, stride 2, on the 504x504 maps
    o = pooled_size(i, k, s)
    return (f"Pooling uses the same formula with P = 0: O = (I - K + 2P)/S + 1\n"
            f"  O = ({i} - {k} + 2·0)/{s} + 1 = {o}: {FEATURE_MAPS}x{o}x{o} after pooling")


def answer_1f() -> str:
    i, k, p, s = 252, 3, 0, 1  # report 1.f: 3x3 kernel, stride 1, no padding
    o = conv_output_size(i, k, p, s)
    return (f"O = (I - K + 2P)/S + 1\n"
            f"  O = ({i} - {k} + 2·{p})/{s} + 1 = {o}: {FEATURE_MAPS}x{o}x{o} after the second "
            "convolution")


def answer_1g() -> str:
    model = CNN1g()
    rows = layer_rows(model)

    def dash(value):
        return value if value else "-"

    weights, biases, parameters = totals(rows)
    table = format_table(
        ["Layer", "Output (CxHxW)", "Weights", "Weight shape", "Biases", "Parameters"],
        [[r.name, shape_text(r.output_shape), dash(r.weights),
          shape_text(r.weight_shape) if r.weight_shape else "-", dash(r.biases),
          dash(r.parameters)] for r in rows]
        + [["Total", "-", weights, "-", biases, parameters]])
    return "\n".join([
        "Read off common.models.CNN1g by forward hooks during one pass of a 3x32x32 input:",
        table,
        f"count_parameters(CNN1g()) = {count_parameters(model)}.",
        "Weight shapes are PyTorch's (out x in x K x K for a conv, out x in for a linear layer);",
        "the report writes in x out (3x32x5x5, 2048x64): the same counts."])


ANSWERS = [
    ("1.a Convolution by hand", answer_1a),
    ("1.b Which layers make a CNN insensitive to small translations", answer_1b),
    ("1.c Padding that keeps the size", answer_1c),
    ("1.d Kernel size from input and output size", answer_1d),
    ("1.e Size after 2x2 max pooling", answer_1e),
    ("1.f Size after the second convolution", answer_1f),
    ("1.g Layers and parameters of the 1.g network", answer_1g),
]


def as_text() -> str:
    return "\n\n".join(f"{title}\n{'=' * len(title)}\n{answer()}" for title, answer in ANSWERS)


def as_markdown() -> str:
    sections = [f"## {title}\n\n```text\n{answer()}\n```" for title, answer in ANSWERS]
    return "\n\n".join(["# Task 1 - Theory"] + sections) + "\n"

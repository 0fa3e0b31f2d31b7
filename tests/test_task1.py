"""Tests of report task 1: every number of 1.a-1.g against the report's values and torch."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

from common.models import CNN1g, count_parameters  # noqa: E402
from task1 import convolution as conv  # noqa: E402
from task1.invariance import shift_table  # noqa: E402
from task1.layer_table import layer_rows, totals  # noqa: E402
from task1.sizes import conv_output_size, kernel_size_for, pooled_size, same_padding  # noqa: E402


# ---- 1.a ------------------------------------------------------------------------------------

def test_1a_loop_convolution_gives_report_matrix():
    result = conv.cross_correlate(conv.IMAGE, conv.SOBEL_X, conv.PADDING)
    np.testing.assert_array_equal(result, [[2, -1, 11, -2, -13], [10, -4, 8, 2, -18],
                                           [14, -1, -5, 6, -9]])


def test_1a_loop_convolution_equals_torch_conv2d_on_report_and_asymmetric_kernel():
    np.testing.assert_array_equal(conv.torch_conv2d(conv.IMAGE, conv.SOBEL_X, 1), conv.REPORT_RESULT)
    # an asymmetric kernel and a bigger image, so a flipped or transposed loop would fail
    rng = np.random.default_rng(0)
    image, kernel = rng.integers(-5, 6, (6, 7)), rng.integers(-3, 4, (3, 3))
    for padding in (0, 1, 2):
        np.testing.assert_array_equal(conv.cross_correlate(image, kernel, padding),
                                      conv.torch_conv2d(image, kernel, padding))


def test_1a_true_convolution_flips_kernel_and_is_negation_for_sobel_x():
    np.testing.assert_array_equal(conv.convolve(conv.IMAGE, conv.SOBEL_X, 1), -conv.REPORT_RESULT)
    np.testing.assert_array_equal(conv.convolve(conv.IMAGE, conv.SOBEL_X, 1),
                                  conv.torch_conv2d(conv.IMAGE, conv.SOBEL_X[::-1, ::-1], 1))


def test_1a_report_line_for_element_3_3_sums_to_minus_5_not_minus_1():
    terms = conv.window_terms(np.pad(conv.IMAGE, 1), conv.SOBEL_X, 2, 2)
    # the report's line: 2·(-1) + 0·0 + 7·1 + 6·(-2) + 1·0 + 1·2 + 0·(-1) + 0·0 + 0·1 = -1
    assert conv.format_terms(terms) == "2·(-1) + 0·0 + 7·1 + 6·(-2) + 1·0 + 1·2 + 0·(-1) + 0·0 + 0·1"
    assert sum(p * w for p, w in terms) == -5 == conv.REPORT_RESULT[2, 2]
    assert conv.REPORT_DERIVATION_TYPOS == {(3, 3): -1}


# ---- 1.b ------------------------------------------------------------------------------------

def test_1b_max_pool_reduces_shift_change_conv_and_relu_are_equivariant():
    rows = shift_table()
    names = [r.name.split("(")[0] for r in rows]
    assert names == ["Input"] + ["Conv2D", "ReLU", "MaxPool"] * 3
    for i, row in enumerate(rows):
        if row.name.startswith("MaxPool"):
            conv_row = rows[i - 2]
            assert row.change < 0.8 * conv_row.change  # pooling removes a clear part of the change
            assert row.change < 0.8 * row.change_if_subsampled  # and it is the max that does it
    conv1, relu1 = rows[1], rows[2]
    assert conv1.change > 0.3 and relu1.change > 0.3  # the shift does change their outputs ...
    assert conv1.change_shift_undone < 1e-6 and relu1.change_shift_undone < 1e-6  # ... by moving them
    assert rows[-1].change < 0.5 * rows[0].change


# ---- 1.c-1.f --------------------------------------------------------------------------------

def test_1c_to_1f_size_formulas_give_report_values():
    assert same_padding(5, 1) == 2                      # 1.c
    assert kernel_size_for(512, 504, padding=0, stride=1) == 9  # 1.d
    assert pooled_size(504, 2, 2) == 252                # 1.e
    assert conv_output_size(252, 3, padding=0, stride=1) == 250  # 1.f


def test_same_padding_with_stride_keeps_the_size():
    padding = same_padding(4, stride=2, width=32)
    assert padding == 17 and conv_output_size(32, 4, padding, 2) == 32


@pytest.mark.parametrize("call, message", [
    (lambda: same_padding(4), "not a whole number"),          # even kernel, stride 1
    (lambda: same_padding(5, stride=2), "pass width"),
    (lambda: kernel_size_for(10, 20), "no kernel"),
    (lambda: conv_output_size(3, 5), "larger than the padded input"),
    (lambda: pooled_size(505, 2, 2), "not a whole number"),
    (lambda: conv_output_size(32, 3, stride=0), "stride must be"),
    (lambda: conv_output_size(32, 3, padding=-1), "padding must be"),
    (lambda: conv_output_size(32.0, 3), "input_size must be"),
])
def test_size_formulas_raise_on_impossible_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- 1.g ------------------------------------------------------------------------------------

def test_1g_layer_table_totals_and_per_layer_counts_match_report():
    model = CNN1g()
    rows = layer_rows(model)
    assert totals(rows) == (390112, 298, 390410) and count_parameters(model) == 390410
    assert [r.parameters for r in rows if r.parameters] == [2432, 51264, 204928, 131136, 650]
    assert [(r.name, r.output_shape) for r in rows] == [
        ("Input", (3, 32, 32)),
        ("Conv2D(F=32,K=5,S=1,P=2)", (32, 32, 32)), ("ReLU", (32, 32, 32)),
        ("MaxPool(K=2,S=2)", (32, 16, 16)),
        ("Conv2D(F=64,K=5,S=1,P=2)", (64, 16, 16)), ("ReLU", (64, 16, 16)),
        ("MaxPool(K=2,S=2)", (64, 8, 8)),
        ("Conv2D(F=128,K=5,S=1,P=2)", (128, 8, 8)), ("ReLU", (128, 8, 8)),
        ("MaxPool(K=2,S=2)", (128, 4, 4)),
        ("Flatten", (2048,)),
        ("Fully-Connected(2048 -> 64)", (64,)), ("ReLU", (64,)),
        ("Fully-Connected(64 -> 10)", (10,)),
    ]


def test_1g_table_follows_the_module_not_a_typed_copy():
    rows = layer_rows(CNN1g(filters=(8, 16, 32), hidden=20))
    assert totals(rows)[2] == count_parameters(CNN1g(filters=(8, 16, 32), hidden=20))
    assert rows[1].name == "Conv2D(F=8,K=5,S=1,P=2)" and rows[1].weight_shape == (8, 3, 5, 5)


# ---- command line ---------------------------------------------------------------------------

def run_task1(*args):
    return subprocess.run([sys.executable, "-m", "task1", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_prints_all_answers_in_report_order(tmp_path):
    out_file = tmp_path / "task1.md"
    result = run_task1("--markdown", str(out_file))
    assert result.returncode == 0, result.stderr
    positions = [result.stdout.index(f"\n{part} ") if part != "1.a" else result.stdout.index(part)
                 for part in ("1.a", "1.b", "1.c", "1.d", "1.e", "1.f", "1.g")]
    assert positions == sorted(positions)
    assert "The report's matrix is the cross-correlation" in result.stdout
    markdown = out_file.read_text()
    assert markdown.startswith("# Task 1")
    for total in ("390112", "298", "390410"):
        assert total in markdown


@pytest.mark.slow
def test_cli_unwritable_markdown_path_is_one_error_line_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_task1("--markdown", str(blocker / "task1.md"))  # a file cannot hold a file
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_help_explains_markdown_option():
    result = run_task1("--help")
    assert result.returncode == 0 and "--markdown PATH" in result.stdout
    assert "markdown file" in result.stdout

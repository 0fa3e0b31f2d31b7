"""Plain-text layout shared by the task 1 answers: integer matrices and aligned tables."""
from __future__ import annotations

import textwrap

WIDTH = 92


def format_matrix(matrix, indent: str = "  ") -> str:
    cells = [[str(v) for v in row] for row in matrix]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + "  ".join(c.rjust(width) for c in row) for row in cells)


def format_table(headers: list[str], rows: list[list], indent: str = "  ") -> str:
    """Left-aligned first column (names), right-aligned numbers."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), indent + "-" * (sum(widths) + 2 * len(widths) - 2)]
                     + [line(row) for row in cells[1:]])


def paragraph(text: str, bullet: str = "") -> str:
    """Wrap prose to WIDTH; continuation lines line up under the text after the bullet."""
    return textwrap.fill(text, WIDTH, initial_indent=bullet, subsequent_indent=" " * len(bullet))

"""Result tables in the report's layout (Table 2.b: loss and accuracy per split), text and CSV."""
from __future__ import annotations

SPLIT_NAMES = (("train", "Training"), ("validation", "Validation"), ("test", "Test"))


def final_table(result: dict, title: str | None = None) -> str:
    """The report's Table 2.b / 3.b layout for one run."""
    lines = [title] if title else []
    lines.append(f"{'-':<12}{'Loss':>8}{'Accuracy':>11}")
    for key, name in SPLIT_NAMES:
        if key in result["final"]:
            row = result["final"][key]
            lines.append(f"{name:<12}{row['loss']:>8.4f}{100 * row['accuracy']:>10.2f}%")
    return "\n".join(lines)


COMPARISON_COLUMNS = ("run", "train_accuracy", "val_accuracy", "test_accuracy", "test_loss",
                      "epochs", "stopped_early", "wall_time_s", "note")


def comparison_rows(results: dict[str, dict]) -> list[dict]:
    """One row per run: final accuracies, epochs until the stop, wall time; a run that
    diverged ({"diverged": message}) gets a row that says so."""
    rows = []
    for name, r in results.items():
        if "diverged" in r:
            rows.append(dict.fromkeys(COMPARISON_COLUMNS, "") | {"run": name, "note": "diverged"})
            continue
        f = r["final"]
        rows.append({
            "run": name,
            "train_accuracy": round(100 * f["train"]["accuracy"], 2),
            "val_accuracy": round(100 * f["validation"]["accuracy"], 2),
            "test_accuracy": round(100 * f["test"]["accuracy"], 2),
            "test_loss": round(f["test"]["loss"], 4),
            "epochs": r["epochs_completed"],
            "stopped_early": r["stopped_early"],
            "wall_time_s": round(r["train_wall_time_s"], 1),
            "note": r.get("note", ""),
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0].keys())
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    out = ["  ".join(k.ljust(widths[k]) for k in keys)]
    out += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(out)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table (cells as given: format numbers before)."""
    def line(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])


def csv_table(header: list[str], rows: list[list]) -> str:
    """The same table as CSV text, Markdown emphasis and code marks taken out."""
    import csv
    import io
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([str(c).replace("**", "").replace("`", "") for c in row])
    return text.getvalue()

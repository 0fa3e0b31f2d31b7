"""python report.py on a damaged results/ folder: every damaged file it reads is one line that
names the file and exit code 2, with --check as without (1 stays "stale"), and nothing is
written; a --root without results/ is one line too."""
import contextlib
import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import report


@pytest.fixture
def root(tmp_path):
    """A copy of the committed results/, all that the report reads before it fails."""
    shutil.copytree(report.ROOT / "results", tmp_path / "results")
    return tmp_path


def edit_json(path: Path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_csv(path: Path, change):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    change(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def replace_text(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


MODEL1 = f"{report.MODEL1}/metrics.json"
SEED0 = f"{report.SPEEDRUN}/seed0"
CONFUSION = "default_bf16/task3/model1/confusion.csv"
PUBLISHED_LOG = f"{report.PUBLISHED_LOGS}/epochs{report.PUBLISHED_EPOCHS}.log"

# (the damaged file under results/, what is done to it): each a traceback before
DAMAGE = {
    "metrics_accuracy_is_text": (MODEL1, lambda p: edit_json(
        p, lambda m: m["final"]["test"].update(accuracy="high"))),
    "metrics_without_its_record": (MODEL1, lambda p: edit_json(p, lambda m: m.pop("config"))),
    "metrics_truncated": (MODEL1, lambda p: p.write_text(p.read_text()[:200])),
    "metrics_best_check_past_the_history": (MODEL1, lambda p: edit_json(
        p, lambda m: m.update(best_check=99))),
    "seed_accuracy_is_a_bool": (f"{SEED0}/metrics.json", lambda p: edit_json(
        p, lambda m: m["final"]["test_tta"].update(accuracy=True))),
    "seed_without_its_seed": (f"{SEED0}/metrics.json", lambda p: edit_json(
        p, lambda m: m.pop("seed"))),
    "seed_without_its_machine": (f"{SEED0}/metrics.json", lambda p: edit_json(
        p, lambda m: m.pop("machine"))),
    "confusion_row_of_an_unknown_class": (CONFUSION, lambda p: replace_text(
        p, "\ncat,", "\nkat,")),
    "confusion_row_cut_short": (CONFUSION, lambda p: edit_csv(
        p, lambda rows: rows.__setitem__(3, rows[3][:5]))),
    "confusion_count_is_not_whole": (CONFUSION, lambda p: edit_csv(
        p, lambda rows: rows[2].__setitem__(2, "3.5"))),
    "history_cell_is_text": (f"{report.MODEL1}/history.csv", lambda p: edit_csv(
        p, lambda rows: rows[2].__setitem__(7, "n/a"))),
    "history_without_rows": (f"{SEED0}/history.csv", lambda p: edit_csv(
        p, lambda rows: rows.__delitem__(slice(1, None)))),
    "study_results_without_the_change_column": (
        f"{report.IMPROVEMENTS}/results.csv", lambda p: edit_csv(
            p, lambda rows: [row.pop() for row in rows])),
    "side_by_side_without_its_precision": (report.SIDE_BY_SIDE, lambda p: edit_json(
        p, lambda s: s.pop("precision"))),
    "tta_accuracy_is_text": (report.TTA, lambda p: edit_json(
        p, lambda t: next(iter(t["seeds"].values()))["levels"]["2"].update(accuracy="90 %"))),
    "bench_without_rounds": (report.BENCH, lambda p: edit_json(
        p, lambda b: b["models"]["model1"]["classic"].update(rounds=[]))),
    "published_log_without_its_final_row": (PUBLISHED_LOG, lambda p: p.write_text(
        "\n".join(line for line in p.read_text().splitlines() if "eval" not in line))),
    "published_log_missing_an_epoch": (PUBLISHED_LOG, lambda p: p.write_text(
        "\n".join(line for line in p.read_text().splitlines()
                  if not line.replace(" ", "").startswith("||3|")))),
}


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        report.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_is_one_line_naming_it_and_exit_2_with_and_without_check(
        case, root, capsys):
    name, damage = DAMAGE[case]
    path = root / "results" / name
    damage(path)
    before = snapshot(root)
    for check in (["--check"], []):
        line = one_error_line([*check, "--root", str(root)], capsys)
        assert str(path) in line, line
    assert snapshot(root) == before  # nothing written: everything is read before any write


def test_a_recorded_config_missing_an_entry_is_stale_never_a_traceback(root, capsys):
    """The generated test's find: a run's recorded recipe without its epochs (the tables read
    the configuration as validated, a missing entry its default)."""
    edit_json(root / "results" / report.IMPROVEMENTS / "silu" / "metrics.json",
              lambda m: m["config"]["recipe"].pop("epochs"))
    try:
        code = report.main(["--check", "--root", str(root)])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 1  # no plots/ here: the figures are missing, so stale


@pytest.mark.parametrize("make_root", [
    lambda tmp: tmp / "no-such-folder",
    lambda tmp: (tmp / "a-file").write_text("") and tmp / "a-file",
    lambda tmp: tmp,  # a folder without results/
], ids=["missing", "a file", "without results"])
def test_a_root_without_results_is_one_line_and_exit_2(make_root, tmp_path, capsys):
    bad = make_root(tmp_path)
    for check in (["--check"], []):
        line = one_error_line([*check, "--root", str(bad)], capsys)
        assert line.startswith(f"error: --root {bad}: "), line


def test_a_document_that_is_not_text_is_one_line_naming_it_and_exit_2(root, capsys):
    """The generated tables' documents are read before anything is written, like results/."""
    (root / "docs").mkdir()
    usage = root / "docs" / "usage.md"
    usage.write_bytes(b"\xff\xfe not UTF-8")
    before = snapshot(root)
    for check in (["--check"], []):
        line = one_error_line([*check, "--root", str(root)], capsys)
        assert str(usage) in line, line
    assert snapshot(root) == before


# every file of results/ the report reads (the runs' training logs and results.json it does not)
READ = sorted(str(p.relative_to(report.ROOT / "results"))
              for pattern in ("**/metrics.json", "**/history.csv", "**/confusion.csv",
                              "*/results.csv", "task3e/speedrun_*.json", "bench/*_cpu.json",
                              "task3e/published/epochs*.log")
              for p in (report.ROOT / "results").glob(pattern))
ODD = st.one_of(st.text(max_size=4), st.booleans(), st.none(), st.integers(-10**400, 10**400),
                st.floats(), st.just([]), st.just({}), st.just([{}]))


def nodes(value, at=()):
    yield at
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, inner in items:
        yield from nodes(inner, (*at, key))


def damage_json(path: Path, data):
    value = json.loads(path.read_text())
    at = data.draw(st.sampled_from([n for n in nodes(value) if n]))
    parent = value
    for key in at[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[at[-1]]
    else:
        parent[at[-1]] = data.draw(ODD)
    path.write_text(json.dumps(value))


def damage_text(path: Path, data):
    lines = path.read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    cells = lines[i].split(",") if path.suffix == ".csv" else [lines[i]]
    j = data.draw(st.integers(0, len(cells) - 1))
    if data.draw(st.booleans()):
        del cells[j]
    else:
        cells[j] = data.draw(st.sampled_from(["", "x", "-1", "2.5", "nan", "inf", "1e999", "cat",
                                              "|", "| eval |"]))
    lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_generated_damage_to_any_file_read_is_stale_or_one_line_exit_2(data):
    """Any one file read, damaged anywhere: "stale" (a change the report sees, or none it
    reads) or one line and exit 2, never a traceback."""
    name = data.draw(st.sampled_from(READ))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(report.ROOT / "results", Path(tmp) / "results")
        path = Path(tmp) / "results" / name
        (damage_json if path.suffix == ".json" else damage_text)(path, data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = report.main(["--check", "--root", tmp])
            except SystemExit as exit_:
                code = exit_.code
    assert code in (1, 2)  # no plots/ here: the figures are missing, so at least stale
    if code == 2:
        assert len(err.getvalue().splitlines()) == 1 and err.getvalue().startswith("error: ")

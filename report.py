"""Every committed figure and results table, redrawn from the committed results/ without training.

  python report.py           # rewrite plots/*.png, results/tables/*.csv and the generated
                             # tables between <!-- generated: NAME --> and
                             # <!-- end generated --> in README.md and docs/*.md
  python report.py --check   # only compare: one line per stale table or figure, exit 1

The figures are common.results' (the scripts draw them with the same functions); a figure is
current when the digest in its PNG matches what it would draw now and its pixels still digest
to what was drawn (common.results.Figure).
Every file of results/ is checked as it is read and everything is read before anything is
written: a damaged one is one line naming it and exit code 2 (1 stays "stale").
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
import csv
import dataclasses
import io
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from common.cli import Parser, answer_help, exits_cleanly, path_text
from common.errors import UserError
from common.recipes import SPEEDRUN as SPEEDRUN_RECIPE
from common.recipes import Finite, Flag, Text, Whole

ROOT = Path(__file__).resolve().parent


def get_args_parser() -> Parser:
    p = Parser(prog="python report.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="only compare; one line per stale table or figure, exit code 1 if any")
    p.add_argument("--root", default=str(ROOT), type=path_text,
                   help="the repository to read results/ from and write into (default: this one)")
    return p


answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from bench import train_speed  # noqa: E402
from common import data, models, recipes  # noqa: E402
from common import results as figures  # noqa: E402
from common.config import (RunConfig, SpeedrunMetrics, SplitScore,  # noqa: E402
                           TrainerMetrics, checked, load_confusion, load_finished, read_csv,
                           read_json)
from common.data import CLASSES  # noqa: E402
from common.files import METRICS_NAME, RunDir, save_json, save_text  # noqa: E402
from common.system import CPU_FLAGS, Machine  # noqa: E402
from common.results import budget, format_epochs, test_acc  # noqa: E402
from common.run import MODELS  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

PLOTS = "plots"
DOCUMENTS = ("README.md", "docs/*.md")
TABLE_DIR = "results/tables"
UNKNOWN = "unknown generated table"
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)

# The report's numbers (../shared/spec/assignment3-report.txt): split -> (loss, accuracy %).
REPORT = {
    "2.b": {"train": (0.7095, 75.91), "validation": (0.8413, 71.22), "test": (0.8652, 70.58)},
    # 3.b and 3.f give the same Model 1 table
    "3.b Model 1": {"train": (0.1348, 89.00), "validation": (0.5240, 82.34),
                    "test": (0.5177, 82.76)},
    "3.b Model 2": {"train": (0.6392, 82.37), "validation": (0.7404, 76.04),
                    "test": (0.7283, 76.09)},
    # the report prints the test loss as "03683"
    "4.a": {"train": (0.0174, 98.93), "validation": (0.3730, 89.92), "test": (0.3683, 90.13)},
}
REPORT_FIGURE4 = {"ReLU": 81.87, "TanH": 76.59}  # report 3.d, Figure 4's caption
# The runs the figures and tables are drawn from, under results/.
CNN, MODEL1, MODEL2 = "task2/cnn1g", "task3/model1", "task3/model2"
# Model 2 by the same recipe under another draw of its initial weights (before the seeding fix):
# the run-to-run spread the studies' figures judge a change against
MODEL2_OTHER_INIT = "task3/model2_before_seedfix"
TANH, TANH13 = "task3cd/tanh", "task3cd_tanh13/tanh"
ONE_EPOCH, IMPROVEMENTS = "task3cd_1epoch", "task3e"
SIDE_BY_SIDE = "task3e/speedrun_vs_published.json"
PUBLISHED_EPOCHS = 8                       # airbench94_muon's own
TARGET_TIME = 0.75                         # issue 33's target: ours in at most this x its time
PUBLISHED_LOGS = "task3e/published"        # the published script's printed logs, epochs<N>.log
FRONTIER = "task3e/speedrun_frontier"      # ours at several budgets: epochs<N>/seed<S>/
# the recipe as it stands: the side-by-side's `ours`, the speed-run's own tables and figure
SPEEDRUN = f"{FRONTIER}/epochs{SPEEDRUN_RECIPE.epochs}"
CANDIDATES = "task3e/speedrun_candidates"  # bench.speedrun_candidates: <candidate>/seed<S>/
CANDIDATE_EPOCHS = 6                       # the candidates' budget, the recipe's row beside them
SECOND_ROUND = "recipe_"                   # the second round's candidates: changes to the recipe
TTA = "task3e/speedrun_tta.json"           # bench.speedrun_tta on the recipe's seeds
# issue 33's bracket, on another machine: the published script's 8 epochs before and after
# ours (epochs8_before.log, epochs8_after.log, each with its machine record), our seeds at the
# budget the recipe's rule gives there (epochs<N>/seed<S>/), and the third round's
# candidates beside them (speedrun_candidates/<candidate>/seed<S>/)
BRACKET_LOGS = "task3e/published_zen4"
BRACKET = "task3e/speedrun_zen4"
BRACKET_CANDIDATES = f"{BRACKET}/speedrun_candidates"
BENCH = "bench/train_speed_cpu.json"
# the README's commands re-run at the default precision on the current code
# the README's commands re-run at the default precision on the current code, on two machines:
# one without bf16 instructions (auto: fp32) and one with (auto: bf16)
DEFAULT_PATH = {(model, precision): f"{folder}/{task}/{model}"
                for precision, folder in (("fp32", "default"), ("bf16", "default_bf16"))
                for task, model in (("task2", "cnn1g"), ("task3", "model1"), ("task3", "model2"))}
COMMANDS = [("1.g CNN", CNN), *[(f"1.g CNN, default path, {p}", DEFAULT_PATH["cnn1g", p])
                                for p in ("fp32", "bf16")],
            ("Model 1", MODEL1), *[(f"Model 1, default path, {p}", DEFAULT_PATH["model1", p])
                                   for p in ("fp32", "bf16")],
            ("Model 2 (re-run, Model 1 loaded)", MODEL2),
            *[(f"Model 2, default path, {p}", DEFAULT_PATH["model2", p]) for p in ("fp32", "bf16")],
            ("TanH", TANH), ("TanH, 13 epochs", TANH13), ("cosine", f"{IMPROVEMENTS}/cosine")]


# ---------------------------------------------------------------- reading results/

# What the report reads of the files only it reads, as types (common.files.checked validates a
# file against them; the run folders' files are checked by common.files' readers). A speed-run
# seed, beyond what every seed holds: the machine (the side-by-side compares times on one), the
# recipe's reason for its precision, a candidate's change.
class Seed(SpeedrunMetrics):
    machine: Machine


class RecipeSeed(Seed):
    precision_reason: Text


class CandidateSeed(Seed):
    description: Text


class SideBySide(TypedDict):
    """The side-by-side as written: what its files cannot say (the rest is computed,
    side_by_side)."""
    precision: Text
    published: dict
    ours: dict


class TtaLevel(TypedDict):
    accuracy: Finite
    seconds: Finite


TtaSeed = TypedDict("TtaSeed", {"levels": TypedDict("TtaLevels", {
    "0": TtaLevel, "1": TtaLevel, "2": TtaLevel})})


class Tta(TypedDict):
    machine: Machine
    seeds: Annotated[dict[str, TtaSeed], Field(min_length=1)]


class Ratio(TypedDict):
    median: Finite
    q1: Finite
    q3: Finite


class ImagesRound(TypedDict):
    img_s: Finite


class EpochRound(ImagesRound):
    epoch_s: Finite


class ClassicRound(EpochRound):
    eval_img_s: Finite


def rounds_of(kind):
    return TypedDict(f"{kind.__name__}s", {"rounds": Annotated[list[kind], Field(min_length=1)]})


class BenchPrecision(TypedDict):
    ceiling: rounds_of(ImagesRound)
    project: rounds_of(EpochRound)
    train_ratio_spread: Ratio
    epoch_ratio_spread: Ratio


class BenchBf16(BenchPrecision):
    ceiling_contiguous: rounds_of(ImagesRound)


BenchModel = TypedDict("BenchModel", {"batch_size": Whole, "classic": rounds_of(ClassicRound),
                                      "precisions": TypedDict("BenchPrecisions", {
                                          "fp32": BenchPrecision, "bf16": BenchBf16})})


class BenchEnvironment(TypedDict):
    device_name: Text
    threads: Whole
    cpu_has_bf16: Flag
    torch: Text
    rounds: Whole


class Bench(TypedDict):
    environment: BenchEnvironment
    models: Annotated[dict[str, BenchModel], Field(min_length=1)]


class Results:
    """The committed results/ folder, read once per run folder; each file is checked as it is
    read (common.files' readers, the types above)."""

    def __init__(self, root: Path):
        self.dir = root / "results"
        try:
            if not root.is_dir():
                problem = "not a folder" if root.exists() else "no such folder"
            else:
                problem = None if self.dir.is_dir() else "no results/ folder in it"
        except OSError as err:  # a folder above it that cannot be read
            problem = f"cannot be read ({err.strerror or err})"
        if problem:
            raise UserError(problem, setting="root", value=root)
        self._runs = {}

    def run(self, name: str, kind=TrainerMetrics) -> dict:
        """A finished run: one a task script trained (TrainerMetrics), a speed-run seed (Seed)
        or, with kind None, either."""
        if name not in self._runs:
            # its record as validated: a missing entry is its default, which the tables then
            # show (stale), never a KeyError
            self._runs[name] = load_finished(RunDir(self.dir / name, writer=False))
        if kind:
            checked(self._runs[name], kind, self.dir / name / METRICS_NAME)
        return self._runs[name]

    def finished(self, name: str) -> bool:
        return RunDir(self.dir / name).is_finished()

    def checks(self, name: str) -> list[dict]:
        return self.run(name)["history"]["checks"]

    def study_rows(self, study: str) -> list[dict]:
        """The study's results.csv (its variants in order, with their descriptions)."""
        return read_csv(self.dir / study / "results.csv", columns=("run", "change"), min_rows=1)

    def seeds(self, folder: str, kind=Seed) -> list[dict]:
        """The speed-run seeds of a folder (seed<N>/metrics.json), at least one."""
        paths = sorted((self.dir / folder).glob("seed*/metrics.json"))
        if not paths:
            raise UserError(f"{self.dir / folder}: no seed<N>/metrics.json in it")
        return [self.run(str(p.parent.relative_to(self.dir)), kind) for p in paths]

    def folders(self, name: str) -> list[Path]:
        """The folders in results/<name>."""
        try:
            return sorted(p for p in (self.dir / name).iterdir() if p.is_dir())
        except OSError as err:
            raise UserError(f"cannot read {self.dir / name} ({err.strerror or err})") from None


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def secs(seconds: float) -> str:
    return f"{seconds:,.0f} s"


def num(epochs: float) -> str:
    """An epoch count as the checks say it (7.5, not the stored 7.5007)."""
    return format_epochs(epochs)


SD = "mean ± sample standard deviation (n-1) over the seeds"  # what every ± in a table is


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def test_cell(run: dict, bold: bool = True) -> str:
    """Test accuracy (bold) and loss: "**79.62 %** (0.590)"."""
    acc = pct(run["final"]["test"]["accuracy"])
    return f"{f'**{acc}**' if bold else acc} ({run['final']['test']['loss']:.3f})"


def accuracies(run: dict) -> str:
    f = run["final"]
    return f"{pct(f['train']['accuracy'])} / {pct(f['validation']['accuracy'])}"


def epochs_text(run: dict) -> str:
    stop = "stopped" if run["stopped_early"] else "no stop"
    return f"{num(run['epochs_completed'])} ({stop}, best {num(run['best_epoch'])})"


def source_line(runs: list[dict]) -> str:
    """Data, device, precision and seed of a set of runs, said once when they agree."""
    def one(key, get):
        values = sorted({str(get(r)) for r in runs})
        return f"{key} {' / '.join(values)}"
    return ", ".join([
        one("data", lambda r: f"`{r['data_source']}`"),
        one("device", lambda r: r["device"]), one("precision", lambda r: r["precision"])])


def data_of(run: dict) -> str:
    return f"`{run['data_source']}`"


def command(run: dict) -> str:
    return run.get("command")


# ---------------------------------------------------------------- the tables

def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table (cells as given: format numbers before)."""
    def line(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])


def csv_table(header: list[str], rows: list[list]) -> str:
    """The same table as CSV text, Markdown emphasis and code marks taken out."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([str(c).replace("**", "").replace("`", "") for c in row])
    return text.getvalue()


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    before: str = ""
    after: str = ""

    def markdown(self) -> str:
        parts = [self.before, markdown_table(self.header, self.rows), self.after]
        return "\n\n".join(p for p in parts if p) + "\n"


def machine_cell(run: dict) -> str:
    """Where a run trained, from its record (runs from before the record say so)."""
    return machine_text(run["machine"], short=True) if run.get("machine") else "not recorded"


def speedrun_row(seeds: list[dict]) -> list:
    tta, plain = (mean_std(100 * s["final"][k]["accuracy"] for s in seeds)
                  for k in ("test_tta", "test"))
    t = mean_std(s["recipe_time_s"] for s in seeds)
    return ["beyond", f"speed-run recipe, {len(seeds)} seeds (`task3e.py --recipe speedrun`)",
            f"(best Model 1: {REPORT['3.b Model 1']['test'][1]:.2f} %)",
            f"**{tta[0]:.2f} ± {tta[1]:.2f} %** with TTA, {plain[0]:.2f} ± {plain[1]:.2f} % "
            "without", "trains on all 50,000",
            f"{num(seeds[0]['epochs_completed'])} (fixed schedule)",
            f"{t[0]:,.0f} ± {t[1]:.0f} s (training + scoring; {SD})",
            " / ".join(sorted({s["precision"] for s in seeds})), machine_cell(seeds[0])]


DEFAULT_ROWS = (("2.b", "1.g CNN", REPORT["2.b"]["test"][1], "cnn1g"),
                ("3.b", "Model 1", REPORT["3.b Model 1"]["test"][1], "model1"),
                ("3.b", "Model 2", REPORT["3.b Model 2"]["test"][1], "model2"))


def report_vs_ours(r: Results) -> Table:
    keys = (CNN, MODEL1, MODEL2, TANH, TANH13, f"{IMPROVEMENTS}/cosine")
    runs = {k: r.run(k) for k in keys + tuple(DEFAULT_PATH.values()) if r.finished(k)}
    seeds = r.seeds(SPEEDRUN)
    rows = []
    default = [(table, f"{name}, default path, current code", report, DEFAULT_PATH[model, p])
               for table, name, report, model in DEFAULT_ROWS for p in ("fp32", "bf16")]
    for table, name, report, key in (
            ("2.b", "1.g CNN (`task2.py`)", REPORT["2.b"]["test"][1], CNN), *default[0:2],
            ("3.b", "Model 1 (`task3.py`)", REPORT["3.b Model 1"]["test"][1], MODEL1),
            *default[2:4],
            ("3.b", "Model 2 (`task3.py`)", REPORT["3.b Model 2"]["test"][1], MODEL2),
            *default[4:6],
            ("3.d", "Model 1 with TanH (`task3cd.py`)", REPORT_FIGURE4["TanH"], TANH),
            ("3.d", "TanH, 13 epochs without early stopping", REPORT_FIGURE4["TanH"], TANH13),
            ("3.e", "Model 1 + cosine LR decay (`task3e.py`)", None, f"{IMPROVEMENTS}/cosine")):
        if key in runs:
            run = runs[key]
            rows.append([table, name, f"{report:.2f} %" if report else
                         "no number (\"none substantially better\")", test_cell(run),
                         accuracies(run), epochs_text(run), secs(run["train_wall_time_s"]),
                         run["precision"], machine_cell(run)])
    rows.append(["4.a", "ResNet18 transfer (`task4a.py`)", f"{REPORT['4.a']['test'][1]:.2f} %",
                 "not run: no ImageNet weights here", "", "", "", "", ""])
    rows.append(speedrun_row(seeds))
    return Table(["report", "run", "report: test acc.", "ours: test acc. (loss)",
                  "ours: train / val acc.", "epochs (early stop, best at)", "time", "precision",
                  "machine"], rows, report_vs_ours_before(runs, seeds),
                 "Each run's command: [docs/results.md](docs/results.md#the-commands-of-the-"
                 "committed-runs).")


def run_commands(r: Results) -> Table:
    """The command of each run in the report-vs-ours table, as its metrics.json records it."""
    seeds = r.seeds(SPEEDRUN)
    rows = [[name, f"`{command(r.run(key))}`"] for name, key in COMMANDS if r.finished(key)]
    rows += [[f"speed-run seed {s['seed']}", f"`{command(s)}`"] for s in seeds]
    return Table(["run", "command"], rows)


def report_vs_ours_before(runs: dict, seeds: list[dict]) -> str:
    seeds_used = sorted({str(x["config"]["seed"]) for x in runs.values()})
    return (f"From `results/`: data {' / '.join(sorted({data_of(x) for x in runs.values()}))}, "
            f"device cpu, seed {' / '.join(seeds_used)} (the speed-run: seeds "
            f"{', '.join(str(s['seed']) for s in seeds)}), one run each. Time: training plus "
            "the validation checks, without the final table (the speed-run: whitening fit, "
            "training and final scoring). \"Default path, current code\": the command the "
            "README gives, at the default `--precision auto`, trained on the code of this "
            "version.")


def report_tables(r: Results) -> Table:
    rows = []
    for table, name, key in (("2.b", "1.g CNN", CNN), ("3.b Model 1", "Model 1", MODEL1),
                             ("3.b Model 2", "Model 2", MODEL2)):
        run = r.run(key)
        for split, label in (("train", "training"), ("validation", "validation"),
                             ("test", "test")):
            loss, acc = REPORT[table][split]
            ours = run["final"][split]
            rows.append([table.split()[0], name, label, f"{loss:.4f} / {acc:.2f} %",
                         f"{ours['loss']:.4f} / {pct(ours['accuracy'])}",
                         f"{100 * ours['accuracy'] - acc:+.2f}"])
    return Table(["report table", "run", "split", "report: loss / acc.", "ours: loss / acc.",
                  "acc. difference (points)"], rows,
                 f"Final tables, best weights, eval mode, no augmentation "
                 f"({source_line([r.run(k) for k in (CNN, MODEL1, MODEL2)])}).")


def tanh_table(r: Results) -> Table:
    rows = []
    for name, key, report in (("ReLU (Model 1)", MODEL1, "ReLU"), ("TanH", TANH, "TanH"),
                              ("TanH, continued", TANH13, "TanH")):
        run = r.run(key)
        rows.append([name, budget(run), f"{REPORT_FIGURE4[report]:.2f} %", test_cell(run),
                     accuracies(run), epochs_text(run), secs(run["train_wall_time_s"])])
    gap = test_acc(r.run(MODEL1)) - test_acc(r.run(TANH))
    gap13 = test_acc(r.run(MODEL1)) - test_acc(r.run(TANH13))
    after = (f"ReLU-TanH gap: {gap:.2f} points with both recipe runs, {gap13:.2f} with the "
             f"continued TanH run; the report's: "
             f"{REPORT_FIGURE4['ReLU'] - REPORT_FIGURE4['TanH']:.2f}.")
    return Table(["run", "budget it had", "report: test acc.", "ours: test acc. (loss)",
                  "train / val acc.", "epochs (early stop, best at)", "wall time"], rows,
                 after=after)


def one_epoch_table(r: Results) -> Table:
    rows = []
    base = test_acc(r.run(f"{ONE_EPOCH}/baseline"))
    for v in r.study_rows(ONE_EPOCH):
        run = r.run(f"{ONE_EPOCH}/{v['run']}")
        diff = "" if v["run"] == "baseline" else f"{test_acc(run) - base:+.2f}"
        rows.append([f"`{v['run']}`", v["change"], pct(run["final"]["test"]["accuracy"]), diff,
                     accuracies(run), secs(run["train_wall_time_s"])])
    return Table(["variant", "change (report 3.c/3.d expects each to do worse than Model 1)",
                  "test acc.", "vs Model 1", "train / val acc.", "wall time"], rows)


def improvements_table(r: Results) -> Table:
    rows = []
    base = test_acc(r.run(MODEL1))
    for v in r.study_rows(IMPROVEMENTS):
        key = MODEL1 if v["run"] == "baseline" else f"{IMPROVEMENTS}/{v['run']}"
        run = r.run(key)
        diff = "" if v["run"] == "baseline" else f"{test_acc(run) - base:+.2f}"
        rows.append([f"`{v['run']}`", v["change"], test_cell(run, bold=False), diff,
                     accuracies(run), budget(run), epochs_text(run),
                     secs(run["train_wall_time_s"])])
    return Table(["variant", "change", "test acc. (loss)", "vs Model 1", "train / val acc.",
                  "budget it had", "epochs (early stop, best at)", "wall time"], rows)


def speedrun_table(r: Results) -> Table:
    seeds = r.seeds(SPEEDRUN)
    rows = [[str(s["seed"]), pct(s["final"]["test"]["accuracy"]),
             pct(s["final"]["test_tta"]["accuracy"]), secs(s["recipe_time_s"]),
             secs(s["wall_time_s"])] for s in seeds]
    plain, tta, t = (mean_std(f(s) for s in seeds) for f in (
        lambda s: 100 * s["final"]["test"]["accuracy"],
        lambda s: 100 * s["final"]["test_tta"]["accuracy"], lambda s: s["recipe_time_s"]))
    wall = statistics.mean(s["wall_time_s"] for s in seeds)
    rows.append([f"**{SD}**", f"**{plain[0]:.2f} ± {plain[1]:.2f} %**",
                 f"**{tta[0]:.2f} ± {tta[1]:.2f} %**", f"**{t[0]:,.0f} ± {t[1]:.0f} s**",
                 secs(wall)])
    return Table(["seed", "test acc.", "with TTA", "training + scoring", "wall, all in"], rows,
                 f"{source_line(seeds)}, {machine_cell(seeds[0])}; `results/{SPEEDRUN}/`.")


def seeds_summary(seeds: list[dict]) -> dict:
    """Our recipe's seeds at one budget, from their own metrics.json."""
    tta, plain, seconds = (mean_std(f(s) for s in seeds) for f in (
        lambda s: 100 * s["final"]["test_tta"]["accuracy"],
        lambda s: 100 * s["final"]["test"]["accuracy"], lambda s: s["recipe_time_s"]))
    return {"test_acc_tta_mean": round(tta[0], 2), "test_acc_tta_std": round(tta[1], 2),
            "test_acc_mean": round(plain[0], 2), "seconds_mean": round(seconds[0], 1),
            "seeds": [s["seed"] for s in seeds],
            "per_seed": {str(s["seed"]): {
                "test_acc_tta": round(100 * s["final"]["test_tta"]["accuracy"], 2),
                "test_acc": round(100 * s["final"]["test"]["accuracy"], 2),
                "seconds": round(s["recipe_time_s"], 1)} for s in seeds}}


# a row of the published script's printed table: run, epoch, train_acc, val_acc, tta_val_acc,
# time_seconds (its "val" is the test set)
LOG_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
LOG_ROW = re.compile(rf"^\|\s*\d*\s*\|\s*(\d+|eval)\s*\|\s*{LOG_NUMBER}\s*\|\s*{LOG_NUMBER}\s*\|"
                     rf"\s*{LOG_NUMBER}?\s*\|\s*{LOG_NUMBER}\s*\|$")
LOG_NAME = re.compile(r"epochs(\d+)\.log")


def published_run(path: Path) -> dict:
    """One run of the published script, read from its complete printed log epochs<N>.log: a row
    per epoch (counted from 0 there), N of them, and the final row, scored with TTA, whose time
    counts everything. A log that is not that: ValueError naming it."""
    history, final = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LOG_ROW.match(line.strip())
        if m is None:
            continue
        epoch, train, test, tta, seconds = m.groups()
        if epoch == "eval" and tta is not None:
            final = {"test_acc_tta": round(100 * float(tta), 2),
                     "test_acc": round(100 * float(test), 2), "seconds": round(float(seconds), 1)}
        elif epoch != "eval":
            history.append({"epoch": int(epoch) + 1, "train_acc": float(train),
                            "test_acc": float(test), "seconds": round(float(seconds), 1)})
    if final is None or not history:
        raise ValueError(f"{path}: no per-epoch rows or no final row with TTA")
    name = LOG_NAME.fullmatch(path.name)
    if [h["epoch"] for h in history] != list(range(1, len(history) + 1)) or (
            name and int(name.group(1)) != len(history)):
        raise ValueError(f"{path}: its epoch rows are "
                         f"{', '.join(str(h['epoch'] - 1) for h in history)}, not 0 to "
                         f"{int(name.group(1)) - 1 if name else 'N - 1'}")
    return {"epochs": len(history), **final, "history": history,
            "log": path.relative_to(path.parents[3]).as_posix()}


def read_published(path: Path, machine_required: bool = False) -> dict:
    """published_run's, with the machine record beside the log (bench.machine_record's, when
    it ran); a log that cannot be read or is incomplete is one line naming it."""
    try:
        run = published_run(path)
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or err})") from None
    except ValueError as err:  # published_run's: not a complete log; it names the file
        raise UserError(str(err)) from None
    beside = path.with_suffix(".machine.json")
    if beside.is_file() or machine_required:
        run["machine"] = read_json(beside, Machine)
    return run


def published_runs(r: Results) -> list[dict]:
    """The published script's runs from their logs, by epochs; the one of PUBLISHED_EPOCHS
    among them."""
    runs = [read_published(path) for path in sorted((r.dir / PUBLISHED_LOGS).glob("epochs*.log"))]
    if not any(p["epochs"] == PUBLISHED_EPOCHS for p in runs):
        raise UserError(f"{r.dir / PUBLISHED_LOGS}: no log of the published script's own "
                        f"{PUBLISHED_EPOCHS} epochs (epochs{PUBLISHED_EPOCHS}.log)")
    return sorted(runs, key=lambda p: p["epochs"])


def one_machine(seeds: list[dict], where: Path) -> dict:
    """The machine every seed recorded: the side-by-side compares times on one machine."""
    machines = {json.dumps(s["machine"], sort_keys=True) for s in seeds}
    if len(machines) != 1:
        raise UserError(f"{where}: the seeds ran on {len(machines)} machines; their times are "
                        "compared on one")
    return json.loads(machines.pop())


# The fields of a machine record (common.system.Machine) that say which CPU ran and how many
# threads torch used: two records of one CPU kind agree in each
CPU_FIELDS = ("cpu", "vendor", "family", "model", "stepping", "threads")


def same_cpu(a: dict, b: dict) -> bool:
    """Two machine records of one CPU kind and thread count: no field of CPU_FIELDS and no flag
    recorded differently. A field one of them did not record (None) cannot tell them apart;
    the captions show it as not recorded."""
    pairs = [(a[k], b[k]) for k in CPU_FIELDS] + [(a["flags"][f], b["flags"][f])
                                                   for f in CPU_FLAGS]
    return all(x == y for x, y in pairs if x is not None and y is not None)


def budgets(r: Results) -> dict[int, list[dict]]:
    """Our recipe's seeds at each budget: FRONTIER/epochs<N>/seed<S>/."""
    found = {}
    for folder in r.folders(FRONTIER):
        name = re.fullmatch(r"epochs(\d+)", folder.name)
        if name is None:
            raise UserError(f"{folder}: not a budget's folder (epochs<N>)")
        found[int(name.group(1))] = r.seeds(str(folder.relative_to(r.dir)))
    return found


def side_by_side(r: Results) -> dict:
    """results/task3e/speedrun_vs_published.json with every figure computed from files: the
    published runs from their logs, ours from the seeds' metrics.json at each budget; what
    the files cannot say (the commands, the precision's reason) stays as written. No order or
    time of day is kept: neither the logs nor metrics.json record when a run began."""
    # only what SideBySide names is kept as written: an entry typed beside it is stale
    s = {k: v for k, v in read_json(r.dir / SIDE_BY_SIDE, SideBySide).items()
         if k in SideBySide.__annotations__}
    published = published_runs(r)
    at_budget = budgets(r)
    s["machine"] = one_machine([x for seeds in at_budget.values() for x in seeds],
                               r.dir / FRONTIER)
    elsewhere = [p["log"] for p in published
                 if "machine" in p and not same_cpu(p["machine"], s["machine"])]
    if elsewhere:
        raise UserError(f"{', '.join(elsewhere)}: the published script's machine record is not "
                        "our seeds' (the side-by-side compares times on one machine)")
    s["published"] = s["published"] | {k: v for k, v in next(
        p for p in published if p["epochs"] == PUBLISHED_EPOCHS).items() if k != "machine"}
    ours = r.seeds(SPEEDRUN, RecipeSeed)
    s["ours"] = s["ours"] | seeds_summary(ours) | {
        "precision_reason": sorted({x["precision_reason"] for x in ours})}
    s["frontier"] = {
        "published": [{k: p[k] for k in ("epochs", "test_acc_tta", "test_acc", "seconds", "log")}
                      | {"machine_recorded": "machine" in p} for p in published],
        "ours": [{"epochs": e, "n": len(seeds), "test_acc_tta": x["test_acc_tta_mean"],
                  "std": x["test_acc_tta_std"], "test_acc": x["test_acc_mean"],
                  "seconds": x["seconds_mean"],
                  "folder": f"results/{FRONTIER}/epochs{e}"}
                 for e, seeds in sorted(at_budget.items()) for x in [seeds_summary(seeds)]]}
    return s


def machine_text(machine: dict, short: bool = False) -> str:
    """A machine record in words: the CPU's name and family/model/stepping (two CPUs of one
    name differ by them), torch's thread count (threads, not cores), the flags it has (short:
    only those, or what it lacks when it has none) and lacks, torch; what the record does not
    hold is said to be not recorded."""
    unknown = [k for k in ("family", "model", "stepping") if machine[k] is None]
    kind = ("family/model/stepping not recorded" if len(unknown) == 3 else ", ".join(
        f"{k} {machine[k]}" if machine[k] is not None else f"{k} not recorded"
        for k in ("family", "model", "stepping")))
    flags = machine["flags"]
    has = [f for f in CPU_FLAGS if flags[f]]
    lacks = [f"no {f}" for f in CPU_FLAGS if flags[f] is False]
    unrecorded = [f for f in CPU_FLAGS if flags[f] is None]
    said = (has or lacks) if short else has + lacks + (
        [f"{'/'.join(unrecorded)} not recorded"] if unrecorded else [])
    text = f"{machine['cpu']} ({kind}), {machine['threads']} threads, {', '.join(said)}"
    return text if short else f"{text}, torch {machine['torch']}"


def speedrun_vs_published(r: Results) -> Table:
    """The side-by-side on one machine, in turn: the published airbench94_muon (a CPU port
    run outside the repository) at each epoch budget, once, and our recipe at each budget with
    its seeds; times against the published script's own 8 epochs."""
    s = side_by_side(r)
    pub, ours = s["published"], s["ours"]
    rows = [["published airbench94_muon (1 run)", num(p["epochs"]), f"{p['test_acc_tta']:.2f} %",
             f"{p['test_acc']:.2f} %", secs(p["seconds"]), f"{p['seconds'] / pub['seconds']:.2f}"]
            for p in s["frontier"]["published"]]
    rows += [[f"ours, `task3e.py --recipe speedrun` ({x['n']} seeds)", num(x["epochs"]),
              f"{x['test_acc_tta']:.2f} ± {x['std']:.2f} %", f"{x['test_acc']:.2f} %",
              secs(x["seconds"]), f"{x['seconds'] / pub['seconds']:.2f}"]
             for x in s["frontier"]["ours"]]
    met = (ours["test_acc_tta_mean"] >= pub["test_acc_tta"]
           and ours["seconds_mean"] <= TARGET_TIME * pub["seconds"])
    return Table(["run", "epochs", f"test acc. with TTA ({SD})", "without (mean)",
                  "whitening + training + scoring (mean)", "time / published at 8"],
                 rows, f"{machine_text(s['machine'])}, {s['precision']} (what `auto` measured "
                       f"faster), JPEG copy of CIFAR-10; `results/{SIDE_BY_SIDE}`, computed "
                       f"from the published logs in `results/{PUBLISHED_LOGS}/` and our seeds' "
                       f"`metrics.json` in `results/{FRONTIER}/`.",
                 f"Target: our recipe as it stands ({SPEEDRUN_RECIPE.epochs} epochs) at least "
                 f"the published accuracy with TTA (8 epochs) in at most {TARGET_TIME}x its time: "
                 f"**{'met' if met else 'not met'}** "
                 f"({ours['test_acc_tta_mean'] - pub['test_acc_tta']:+.2f} points in "
                 f"{ours['seconds_mean'] / pub['seconds']:.2f}x the time).")


def bracket(r: Results) -> dict:
    """Issue 33's bracket from its files: the published script's 8 epochs before and after
    ours, each with its machine record, which must be our seeds' CPU; our one budget's seeds;
    the candidates trained beside them."""
    logs = r.dir / BRACKET_LOGS
    published = {when: read_published(logs / f"epochs{PUBLISHED_EPOCHS}_{when}.log",
                                       machine_required=True) for when in ("before", "after")}
    budget = [f for f in r.folders(BRACKET) if re.fullmatch(r"epochs\d+", f.name)]
    if len(budget) != 1:
        raise UserError(f"{r.dir / BRACKET}: {len(budget)} budget folders (epochs<N>); the "
                        "bracket has one")
    folder = budget[0]
    ours = r.seeds(str(folder.relative_to(r.dir)), RecipeSeed)
    candidates = {f.name: r.seeds(str(f.relative_to(r.dir)), CandidateSeed)
                  for f in (r.folders(BRACKET_CANDIDATES)
                            if (r.dir / BRACKET_CANDIDATES).is_dir() else [])}
    machine = one_machine(ours + [s for seeds in candidates.values() for s in seeds],
                          r.dir / BRACKET)
    elsewhere = [p["log"] for p in published.values() if not same_cpu(p["machine"], machine)]
    if elsewhere:
        raise UserError(f"{', '.join(elsewhere)}: the published script's machine record is not "
                        "our seeds' (the bracket compares times on one machine)")
    return {"published": published, "ours": ours, "folder": folder, "machine": machine,
            "candidates": candidates}


def speedrun_bracket(r: Results) -> Table:
    """The published script's 8 epochs run before and after our seeds on one machine (issue 33),
    its mean the measure; ours at the budget the recipe's rule gives on that machine, and the
    third round's candidates at the same budget."""
    b = bracket(r)
    pub = b["published"]
    mean = {k: statistics.fmean(p[k] for p in pub.values())
            for k in ("test_acc_tta", "test_acc", "seconds")}

    def published_row(label, p):
        return [label, num(PUBLISHED_EPOCHS), f"{p['test_acc_tta']:.2f} %",
                f"{p['test_acc']:.2f} %", secs(p["seconds"]),
                f"{p['seconds'] / mean['seconds']:.2f}"]

    def our_row(label, seeds):
        x = seeds_summary(seeds)
        return [f"{label} (seeds {', '.join(map(str, x['seeds']))})",
                num(seeds[0]["epochs_completed"]),
                f"{x['test_acc_tta_mean']:.2f}" + (f" ± {x['test_acc_tta_std']:.2f}"
                                                   if len(seeds) > 1 else "") + " %",
                f"{x['test_acc_mean']:.2f} %", secs(x["seconds_mean"]),
                f"{x['seconds_mean'] / mean['seconds']:.2f}"]

    ours = seeds_summary(b["ours"])
    rows = [published_row(f"1. published airbench94_muon (`{pub['before']['log']}`)",
                          pub["before"]),
            our_row(f"2. ours, `task3e.py --recipe speedrun` "
                    f"(`results/{b['folder'].relative_to(r.dir).as_posix()}/`)", b["ours"]),
            published_row(f"3. published airbench94_muon again (`{pub['after']['log']}`)",
                          pub["after"]),
            published_row("published airbench94_muon, mean of 1 and 3", mean)]
    # the candidates ran after the bracket's second published run: outside it, and said so
    rows += [our_row(f"{i}. after the bracket, outside it: candidate `{name}`: "
                     f"{seeds[0]['description']}", seeds)
             for i, (name, seeds) in enumerate(b["candidates"].items(), start=4)]
    met = (ours["test_acc_tta_mean"] >= mean["test_acc_tta"]
           and ours["seconds_mean"] <= TARGET_TIME * mean["seconds"])
    precisions = sorted({s["precision"] for s in b["ours"]})
    return Table(["run", "epochs", f"test acc. with TTA ({SD})", "without (mean)",
                  "whitening + training + scoring (mean)", "time / published mean"], rows,
                 f"{machine_text(b['machine'])}, ours in {', '.join(precisions)} (what `auto` "
                 f"measured faster), the published port in bf16, one after the other in the "
                 f"order of the numbers: rows 1 to 3 the bracket, then its mean; a candidate "
                 f"ran after the bracket, so its time is not bracketed; "
                 f"`results/{BRACKET_LOGS}/` and `results/{BRACKET}/`.",
                 f"Target on this machine: our recipe at least the published accuracy with TTA "
                 f"(the mean of its two runs) in at most {TARGET_TIME}x its mean time: "
                 f"**{'met' if met else 'not met'}** "
                 f"({ours['test_acc_tta_mean'] - mean['test_acc_tta']:+.2f} points in "
                 f"{ours['seconds_mean'] / mean['seconds']:.2f}x the time).")


def candidates_table(r: Results, second_round: bool = False) -> Table:
    """Every candidate change to the speed-run recipe, trained on its own
    (`python -m bench.speedrun_candidates`), in order of accuracy. First round: changes to
    the recipe before Muon, beside the recipe that combined the ones that paid; second round:
    changes to that recipe, beside it at its own budget."""
    found = []
    folders = [(p.name, p, None, None) for p in r.folders(CANDIDATES)
               if p.name.startswith(SECOND_ROUND) == second_round]
    if second_round:  # the candidates ran seed 0: the recipe's own seed 0 pairs with them
        description = f"none: the recipe as it stands (`results/{SPEEDRUN}/`)"
        folders += [("recipe", r.dir / SPEEDRUN, description, None),
                     ("recipe", r.dir / SPEEDRUN, description, 0)]
    else:
        folders.append(("recipe", r.dir / FRONTIER / f"epochs{CANDIDATE_EPOCHS}",
                        "all three of Muon at 0.06, linear to 0 and reflect padding: the recipe "
                        f"(`results/{FRONTIER}/epochs{CANDIDATE_EPOCHS}/`)", None))
    for name, folder, description, only_seed in folders:
        seeds = [s for s in r.seeds(str(folder.relative_to(r.dir)),
                                    Seed if description else CandidateSeed)
                 if only_seed is None or s["seed"] == only_seed]
        if not seeds:
            raise UserError(f"{folder}: no seed{only_seed}/metrics.json in it")
        x, first = seeds_summary(seeds), seeds[0]
        found.append((x["test_acc_tta_mean"], [
            f"`{name}`", description or first["description"], num(first["epochs_completed"]),
            ", ".join(map(str, x["seeds"])),
            f"{x['test_acc_tta_mean']:.2f}" + (f" ± {x['test_acc_tta_std']:.2f}"
                                               if len(seeds) > 1 else "") + " %",
            f"{x['test_acc_mean']:.2f} %", secs(x["seconds_mean"])], seeds))
    found.sort(key=lambda f: f[0])
    machine = one_machine([s for _, _, seeds in found for s in seeds], r.dir / CANDIDATES)
    return Table(["candidate", "change", "epochs", "seeds", f"test acc. with TTA ({SD})",
                  "without",
                  "whitening + training + scoring"], [row for _, row, _ in found],
                 f"{machine_text(machine)}, {found[0][2][0]['precision']}, one after the other; "
                 f"`results/{CANDIDATES}/<candidate>/seed<N>/metrics.json`.")


def second_round_table(r: Results) -> Table:
    return candidates_table(r, second_round=True)


def tta_table(r: Results) -> Table:
    """The recipe's seeds scored again at each test-time augmentation level (bench.speedrun_tta):
    what each level's views add, and what they cost."""
    t = read_json(r.dir / TTA, Tta)
    views = {"0": "the image", "1": "+ its mirror (2 views)",
             "2": "+ both shifted one pixel up-left and down-right (6 views)"}
    acc = {level: statistics.fmean(s["levels"][level]["accuracy"] for s in t["seeds"].values())
           for level in views}
    rows = [[level, text, f"{acc[level]:.2f} %", f"{acc[level] - acc['2']:+.2f}",
             secs(statistics.median(s["levels"][level]["seconds"] for s in t["seeds"].values()))]
            for level, text in views.items()]
    return Table(["level", "views", "test acc. (mean of seeds)", "vs level 2", "scoring time "
                  "(median)"], rows,
                 f"{machine_text(t['machine'])}, {len(t['seeds'])} seeds' final weights "
                 f"(`results/{TTA}`).")


def speedrun_epochs(r: Results) -> Table:
    """Seed 0 of the three-seed study, epoch by epoch."""
    seed0 = r.run(f"{SPEEDRUN}/seed0", Seed)
    checks = seed0["history"]["checks"]
    return Table(["epoch", *[f"{c['epoch']:g}" for c in checks]],
                 [["test accuracy (no TTA)", *[pct(c["test_accuracy"]) for c in checks]],
                  ["training time", *[secs(c["train_time_s"]) for c in checks]]],
                 f"`results/{SPEEDRUN}/seed0/history.csv`; then "
                 f"{pct(seed0['final']['test_tta']['accuracy'])} with TTA "
                 f"({secs(seed0['tta_time_s'])} of scoring).")


def spread(rounds: list[float], digits: int = 1) -> str:
    """median [min-max] of a benchmark's rounds."""
    fmt = f"{{:,.{digits}f}}"
    return (f"{fmt.format(statistics.median(rounds))} [{fmt.format(min(rounds))}-"
            f"{fmt.format(max(rounds))}]")


def ratio(s: dict, verdict: str | None = None) -> str:
    text = f"{s['median']:.3f} (IQR {s['q1']:.3f}-{s['q3']:.3f})"
    return f"{text} {verdict}" if verdict else text


def bench_table(r: Results) -> Table:
    """The benchmark's figures (results/bench/train_speed_cpu.json), median [min-max] over
    rounds; ratios as medians of per-round ratios with their interquartile range."""
    bench = read_json(r.dir / BENCH, Bench)
    models = bench["models"]
    def rounds(m, key, p, part):
        source = m["classic"] if part == "classic" else m["precisions"][p][part]
        return [x[key] for x in source["rounds"]]
    rows = []
    for label, part, p, key in (("ceiling fp32, images/s", "ceiling", "fp32", "img_s"),
                                ("ceiling bf16, images/s", "ceiling", "bf16", "img_s"),
                                ("project fp32, images/s", "project", "fp32", "img_s"),
                                ("project bf16, images/s", "project", "bf16", "img_s"),
                                ("classic fp32, images/s", "classic", None, "img_s"),
                                ("classic, evaluation images/s", "classic", None, "eval_img_s"),
                                ("project fp32, s per epoch incl. checks", "project", "fp32",
                                 "epoch_s"),
                                ("project bf16, s per epoch incl. checks", "project", "bf16",
                                 "epoch_s"),
                                ("classic, s per epoch incl. checks", "classic", None,
                                 "epoch_s"),
                                ("bf16 ceiling, not channels_last, images/s",
                                 "ceiling_contiguous", "bf16", "img_s")):
        rows.append([label, *[spread(rounds(m, key, p, part)) for m in models.values()]])
    for p in ("bf16", "fp32"):
        rows.append([f"{p} project / ceiling, images/s",
                     *[ratio(m["precisions"][p]["train_ratio_spread"]) for m in models.values()]])
        rows.append([f"{p} project / classic, s per epoch",
                     *[ratio(m["precisions"][p]["epoch_ratio_spread"]) for m in models.values()]])
    env = bench["environment"]
    return Table(["", *[f"{name} (batch {m['batch_size']})" for name, m in models.items()]], rows,
                 f"`results/{BENCH}`: {env['device_name']}, {env['threads']} threads, "
                 f"avx512_bf16 {'yes' if env['cpu_has_bf16'] else 'no'}, torch {env['torch']}, "
                 f"{env['rounds']} rounds.")


def speedrun_vs_model1(r: Results) -> Table:
    """Both on one time basis, on one machine: seconds since the run began, training plus the
    evaluations; Model 1 is the default-path bf16 run of the speed-run's machine."""
    key = DEFAULT_PATH["model1", "bf16"]
    m1, checks = r.run(key), r.checks(key)
    best, stop = checks[int(m1["best_check"])], checks[-1]
    seeds = r.seeds(SPEEDRUN)
    last = mean_std(s["history"]["checks"][-1]["wall_time_s"] for s in seeds)
    plain = mean_std(100 * s["final"]["test"]["accuracy"] for s in seeds)
    tta = mean_std(100 * s["final"]["test_tta"]["accuracy"] for s in seeds)
    scoring = statistics.mean(s["tta_time_s"] for s in seeds)
    # per-epoch seconds of Model 1 from its checks' clock (each epoch's last check)
    ends = {}
    for c in checks:
        ends[int(-(-c["epoch"] // 1))] = c["wall_time_s"]
    per_epoch = [b - a for a, b in zip([0.0, *list(ends.values())[:-1]], ends.values())]
    slowest = max(per_epoch) / statistics.median(per_epoch)
    rows = [
        [f"Model 1, report recipe (`results/{key}`)",
         f"{test_acc(m1):.2f} % (best check, epoch {num(best['epoch'])})",
         (f"{secs(best['wall_time_s'])} to the best check, {secs(stop['wall_time_s'])} to the "
          f"early stop (epoch {num(stop['epoch'])})")],
        [f"speed-run recipe ({len(seeds)} seeds, `results/{SPEEDRUN}`)",
         f"{plain[0]:.2f} ± {plain[1]:.2f} % without TTA ({tta[0]:.2f} % with; {SD})",
         (f"{last[0]:,.0f} ± {last[1]:.0f} s to the last epoch (the TTA scoring adds "
          f"{secs(scoring)})")],
    ]
    after = (f"Both {m1['precision']} on {machine_cell(m1)}. Speed-run against Model 1: "
             f"{plain[0] - test_acc(m1):+.2f} points without TTA ({tta[0] - test_acc(m1):+.2f} "
             f"with) in {last[0] / stop['wall_time_s']:.2f} of Model 1's time to its stop. "
             f"Model 1's slowest epoch took {slowest:.1f}x its median epoch "
             "(another program shared the CPU: its `train.log`), so the ratio flatters the "
             "speed-run.")
    return Table(["run", "test acc.", "time since the run began (training + evaluations)"],
                 rows, after=after)


PROFILE = "task3e/profile"                 # bench.speedrun_profile's shares and step candidates
Candidate = TypedDict("Candidate", {"description": Text, "per_image": Flag})
StepCandidates = TypedDict("StepCandidates", {"candidates": dict[str, Candidate]})
Frontier = TypedDict("Frontier", {"step_ratio_to_close_gap": Finite,
                                  "seconds_to_close_gap": Finite, "train_time_11_epochs_s": Finite})
FrontierCandidates = TypedDict("FrontierCandidates", {"candidates": dict[str, Candidate],
                                                      "frontier": Frontier})
Shares = TypedDict("Shares", {"machine": Machine, "sides": TypedDict("Sides", {
    "ours": TypedDict("Ours", {"precision": Text, "training": TypedDict("Training", {
        "groups": Annotated[dict[str, Finite], Field(min_length=1)]})})})})
PerImage = TypedDict("PerImage", {"ratio_per_image": Ratio})
PerStep = TypedDict("PerStep", {"ratio_per_step": Ratio})


def step_cost(r: Results) -> Table:
    """The speed-run's step-cost candidates (bench.speedrun_profile), each a median ratio of
    its step's time to the recipe's over interleaved pairs, and the conclusion they support:
    the step ratio that would fit the missing accuracy's training into the recipe's time
    (T / (T + the seconds the frontier's slope asks)) against compute's share of a step."""
    folder = r.dir / PROFILE
    runs = {name: read_json(folder / name, FrontierCandidates if name == "step_candidates.json"
                            else StepCandidates)
            for name in ("step_candidates.json", "step_candidates_other_precision.json")}
    shares = read_json(folder / "shares.json", Shares)
    def measured(c):  # a candidate that changes the batch is timed per image, the rest per step
        checked(c, PerImage if c["per_image"] else PerStep,
                f"{folder}: candidate {c['description']!r}")
        return c["ratio_per_image" if c["per_image"] else "ratio_per_step"]
    rows = [[f"`{name}`", c["description"], ratio(measured(c)) + (" per image" if c["per_image"]
                                                                 else ""),
             f"`results/{PROFILE}/{file}`"]
            for file, data in runs.items() for name, c in data["candidates"].items()]
    ours = shares["sides"]["ours"]
    compute = next(v for k, v in ours["training"]["groups"].items() if k.startswith("compute"))
    frontier = runs["step_candidates.json"]["frontier"]
    needed = frontier["step_ratio_to_close_gap"]
    best = min(measured(c)["median"]
               for c in runs["step_candidates.json"]["candidates"].values())
    verdict = ("level with it: a tie, not a margin" if abs(compute - needed) < 0.01 else
               "below it" if compute < needed else "above it: out of reach")
    return Table(["candidate", "change", "time / the recipe's (median, IQR)", "file"], rows,
                 f"Below 1 is cheaper; interleaved pairs on the profile's machine "
                 f"({machine_text(shares['machine'])}), the recipe in {ours['precision']}.",
                 f"To train the {frontier['seconds_to_close_gap']:.0f} s more that the frontier's "
                 f"slope asks within the recipe's {frontier['train_time_11_epochs_s']:.0f} s of "
                 f"training, a step must take {needed:.3f} of its time (T / (T + the missing "
                 f"seconds)). Compute alone (convolutions and matmuls) is {compute:.3f} of our "
                 f"step, {verdict}; the best same-precision candidate measured {best:.3f}.")


TABLES = {
    "speedrun-step-cost": step_cost,
    "report-vs-ours": report_vs_ours,
    "run-commands": run_commands,
    "final-tables": report_tables,
    "task3d-tanh": tanh_table,
    "task3c-one-epoch": one_epoch_table,
    "task3e-improvements": improvements_table,
    "speedrun-seeds": speedrun_table,
    "speedrun-vs-model1": speedrun_vs_model1,
    "speedrun-vs-published": speedrun_vs_published,
    "speedrun-bracket": speedrun_bracket,
    "speedrun-seed0-epochs": speedrun_epochs,
    "speedrun-candidates": candidates_table,
    "speedrun-candidates-2": second_round_table,
    "speedrun-tta": tta_table,
    "bench": bench_table,
}


# ---------------------------------------------------------------- the figures

TestScore = TypedDict("TestScore", {"final": TypedDict("TestFinal", {"test": SplitScore})})


def run_to_run_spread(r: Results) -> dict:
    """The one measured run-to-run spread of the report's recipes: Model 2's test accuracy
    under two draws of its initial weights, all else alike (one pair: a spread, not a bound)."""
    # the older run's record predates the run validator's configuration: only its score is read
    other = read_json(r.dir / MODEL2_OTHER_INIT / METRICS_NAME, TestScore)
    points = abs(test_acc(r.run(MODEL2)) - test_acc(other))
    return {"points": points, "what": "Model 2 under two initialisations"}


def figures_to_draw(r: Results) -> list[figures.Figure]:
    """Every committed figure of plots/, by the functions the scripts draw them with."""
    m1, m2 = r.run(MODEL1), r.run(MODEL2)
    one_epoch, improvements = r.study_rows(ONE_EPOCH), r.study_rows(IMPROVEMENTS)
    spread = run_to_run_spread(r)
    out = [
        figures.figure1(r.run(CNN)), figures.figure2(m1, "model1"), figures.figure2(m2, "model2"),
        figures.figure3(m1, m2), figures.figure4(m1, r.run(TANH)),
        figures.figure4_continued(m1, r.run(TANH13)),
        figures.study_figure("task3c", {v["run"]: r.run(f"{ONE_EPOCH}/{v['run']}")
                                        for v in one_epoch},
                             {v["run"]: v["change"] for v in one_epoch}, spread),
        # task3e's baseline is Model 1 of Table 3.b (its results.csv says it was loaded)
        figures.study_figure("task3e", {v["run"]: r.run(MODEL1 if v["run"] == "baseline"
                                                        else f"{IMPROVEMENTS}/{v['run']}")
                                        for v in improvements},
                             {v["run"]: v["change"] for v in improvements}, spread),
        figures.speedrun_vs_time(r.seeds(SPEEDRUN), r.run(DEFAULT_PATH["model1", "bf16"])),
        figures.speedrun_vs_published(side_by_side(r)),
    ]
    for path in sorted(r.dir.rglob("confusion.csv")):
        folder = str(path.parent.relative_to(r.dir))
        name = folder.replace("/", "_").replace("\\", "_")
        out.append(figures.confusion_figure(r.run(folder, kind=None),
                                            load_confusion(RunDir(path.parent, writer=False), CLASSES),
                                            f"{name}_confusion.png"))
    return out


# ---------------------------------------------------------------- documents

def documents(root: Path) -> dict[Path, str]:
    """The documents with generated tables, read (one that cannot be is one line naming it)."""
    found = {}
    for pattern in DOCUMENTS:
        for path in sorted(root.glob(pattern)):
            try:
                found[path] = path.read_text(encoding="utf-8")
            except OSError as err:
                raise UserError(f"cannot read {path} ({err.strerror or err})") from None
            except ValueError as err:  # not UTF-8
                raise UserError(f"cannot read {path} ({err})") from None
    return found


def render_blocks(text: str, generated: dict[str, str], where: str) -> tuple[str, list[str]]:
    """The document with every generated block rewritten; unknown names are errors."""
    errors = []

    def replace(m):
        name = m.group(2)
        if name not in generated:
            errors.append(f"{where}: {UNKNOWN} {name!r} (known: "
                          f"{', '.join(generated)})")
            return m.group(0)
        return m.group(1) + generated[name] + m.group(4)
    return BLOCK.sub(replace, text), errors


def stale_blocks(old: str, new: str) -> list[tuple[str, int]]:
    """(name, line) of each generated block whose text differs, the line its first differing
    line in the old text (where a planted or stale number stands)."""
    olds = {m.group(2): m for m in BLOCK.finditer(old)}
    stale = []
    for m in BLOCK.finditer(new):
        was = olds.get(m.group(2))
        if was is not None and was.group(3) == m.group(3):
            continue
        if was is None:
            stale.append((m.group(2), line_of(new, m.start())))
            continue
        pairs = zip(was.group(3).split("\n"), m.group(3).split("\n"))
        first = next((i for i, (a, b) in enumerate(pairs) if a != b),
                     min(was.group(3).count("\n"), m.group(3).count("\n")))
        stale.append((m.group(2), line_of(old, was.start(3)) + first))
    return stale


# ---------------------------------------------------------------- numbers in prose

# A number the prose states is generated (a table between the generated marks, or one value
# between <!-- value: PATH FIELD FORMAT --> and <!-- /value -->, written here from that field of
# a file under results/) or a constant of the package (a setting's value, known from the code
# below); any other measured number is a defect --check names by file and line.
VALUE = re.compile(r"<!-- value: (\S+) (\S+) (\w+) -->([^\n]*?)<!-- /value -->")
FORMATS = {
    "pct1": lambda v: f"{100 * v:.1f} %", "pct2": lambda v: f"{100 * v:.2f} %",  # a fraction
    "p2": lambda v: f"{v:.2f} %",                     # a value already in percent
    "pts2": lambda v: f"{v:.2f} points",              # a difference in percentage points
    "s0": lambda v: f"{v:,.0f} s", "s1": lambda v: f"{v:,.1f} s",
    "x2": lambda v: f"{v:.2f}x", "f2": lambda v: f"{v:.2f}", "f3": lambda v: f"{v:.3f}",
    "f4": lambda v: f"{v:.4f}", "int": lambda v: f"{int(v):,}",
}
# What the check reads as a measured number: one with a unit of measurement, or a decimal point.
UNIT = (r"(?:x|×)(?!\w)|\s?(?:%|ms\b|s\b|seconds?\b|minutes?\b|hours?\b|points?\b|img/s\b"
        r"|images/s\b|MB\b|GB\b)")
NUMBER = re.compile(
    r"(?<![\w.\-/,+−])[-+−±]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
    rf"(?:\s*[-–]\s*(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?)?({UNIT})?(?![\w/]|[.,]\d)")
# Not read: generated text, code, link targets, another's words in double quotes (the report's,
# a paper's title) and an arXiv identifier. Each is blanked, its line breaks kept.
NOT_PROSE = (BLOCK, VALUE, re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE),
             re.compile(r"`[^`\n]*`"), re.compile(r"\]\([^)\n]*\)"), re.compile(r"\"[^\"\n]*(?:\n[^\"\n]*)?\""),
             re.compile(r"arXiv \d{4}\.\d+"), re.compile(r"<!--.*?-->", re.DOTALL))


# The words that name a setting in prose, where they are not its field's name with spaces
SETTING_WORDS = {"lr": ("lr", "rate"), "muon_lr": ("rate",), "lr_start": ("rate", "start"),
                 "lr_end": ("rate", "end"), "bias_lr_scale": ("bias",),
                 "normalization": ("mean", "std", "normalis"), "noise_std": ("noise", "std"),
                 "label_smoothing": ("smoothing",), "bn_momentum": ("momentum",),
                 "muon_momentum": ("momentum",), "betas": ("betas",),
                 "dropout": ("dropout", "p ", "probability"), "rotate_degrees": ("rotation",),
                 "negative_slope": ("slope",), "target": ("time",)}


def numbers_in(value, name=None):
    """(name, number) for every number in `value` (dataclasses, dicts and lists, nested), by
    the name of the field or key that holds it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from numbers_in(inner, key)
    elif isinstance(value, (tuple, list)):
        for inner in value:
            yield from numbers_in(inner, name)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield name, value


# what the package sets: every recipe, a study's changes, the speed-run's and the record's
# defaults
PACKAGE_SETTINGS = [*vars(recipes).values(), recipes.SpeedrunConfig(),
                    {f.name: f.default for f in dataclasses.fields(RunConfig)}]


def constants() -> dict[str, set[float]]:
    """The package's own values, by the setting they belong to, which the prose may state as
    they are beside the setting's words (SETTING_WORDS): every number a recipe, a study's
    change or the run configuration is set to (PACKAGE_SETTINGS), torch's defaults the studies
    keep (LeakyReLU's slope) and the speed-run's target."""
    found = {"target": {TARGET_TIME}, "noise_std": {recipes.NOISE_STD},
             "negative_slope": {torch.nn.LeakyReLU().negative_slope}}
    for name, value in numbers_in(PACKAGE_SETTINGS):
        found.setdefault(name, set()).add(float(value))
    return found


CLAUSE = re.compile(r"[;:—]|\. ")  # what ends the clause a setting's name and value share


def stated(value: float, before: str, after: str, known: dict[str, set[float]]) -> bool:
    """`value` is a value of the setting named nearest before it in `before` (its clause, up to
    it), or, when none is named there, nearest after it in `after` (its clause, from it)."""
    for text, last in ((before.lower(), True), (after.lower(), False)):
        spots = [(m.end() if last else -m.start(), name) for name in known if name
                 for word in SETTING_WORDS.get(name, (name.replace("_", " "),))
                 for m in re.finditer(rf"\b{re.escape(word)}", text)]
        if spots:
            nearest = max(spot for spot, _ in spots)
            return any(value in known[name] for spot, name in spots if spot == nearest)
    return False


def field_value(data, field_path: str):
    """data's value at a dotted path (a list's items by their index)."""
    for key in field_path.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            raise KeyError(key)
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise KeyError(field_path)
    return data


def line_of(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def render_values(text: str, root: Path, where: str) -> tuple[str, list[str]]:
    """The document with every value marker's text written from its file and field; a marker
    that names no file under results/, no number or no format is an error naming its line."""
    errors, cache = [], {}

    def replace(m):
        path, field_path, fmt, _ = m.groups()
        problem = None
        if not path.startswith("results/") or ".." in path.split("/"):
            problem = f"{path} is not a file under results/"
        elif fmt not in FORMATS:
            problem = f"no format {fmt!r} (known: {', '.join(FORMATS)})"
        else:
            if path not in cache:
                cache[path] = read_json(root / path)
            try:
                return m.group(0)[:m.start(4) - m.start(0)] + FORMATS[fmt](
                    field_value(cache[path], field_path)) + "<!-- /value -->"
            except KeyError:
                problem = f"no number at {field_path} in {path}"
        errors.append(f"{where}:{line_of(text, m.start())}: value marker: {problem}")
        return m.group(0)
    return VALUE.sub(replace, text), errors


def blank(text: str) -> str:
    """The prose only: NOT_PROSE blanked to spaces, every line where it was."""
    for pattern in NOT_PROSE:
        text = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    return text


# A whole number before one of these nouns is a count: one the code or a run's record knows (a
# setting, the data's size, a model's parameters, a budget, a machine's threads) or a measured
# one, which is generated like any other. Other whole numbers (a year, a section, 32x32) pass.
COUNTED = re.compile(r"\s+(?:(?:training|test|validation|timed|interleaved|more|full)\s+)?"
                     r"(epoch|check|image|parameter|pixel|px|thread|round|seed)s?\b")
# the record's and the recipes' fields, and the options typed in the docs' commands, by noun
COUNT_FIELDS = {"epochs": "epoch", "whiten_bias_epochs": "epoch", "low_res_epochs": "epoch",
                "ema_epochs": "epoch", "patience": "check", "checks_per_epoch": "check",
                "batch_size": "image", "eval_batch_size": "image", "whiten_images": "image",
                "subset": "image", "image_size": "pixel", "translate_px": "pixel",
                "low_res_px": "pixel", "image-size": "pixel", "batch-size": "image",
                "threads": "thread", "rounds": "round"}
OPTION_VALUE = re.compile(r"--([a-z-]+)[ =](\d+)\b")


def counts(root: Path, texts=None) -> dict[str, set[float]]:
    """The whole numbers each counted noun may be stated with: the recipes' and every committed
    run's settings, the options the docs' commands type and the benchmark's defaults, the
    data's sizes, the parameters of each network the package builds, the budgets and seeds
    under results/, the machine records' threads and the benchmarks' rounds. `texts`: the
    documents, as read (documents())."""
    found = {noun: set() for noun in ("epoch", "check", "image", "parameter", "pixel", "thread",
                                      "round", "seed")}
    found["px"] = found["pixel"]

    runs = []
    for path in sorted((root / "results").rglob("*.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # the tables name a damaged file; this check only reads
            continue
    typed = [{name: int(value)} for text in (documents(root) if texts is None else
                                             texts).values()
             for name, value in OPTION_VALUE.findall(text)]
    benchmark = {"rounds": train_speed.get_args_parser().get_default("rounds")}
    for name, value in numbers_in([PACKAGE_SETTINGS, runs, typed, benchmark]):
        if name in COUNT_FIELDS and isinstance(value, int):
            found[COUNT_FIELDS[name]].add(float(value))
    train = round(50_000 * (1 - data.VALIDATION_FRACTION))
    found["image"] |= {float(n) for n in (recipes.QUICK_SUBSET, 60_000, 50_000, 10_000, train,
                                          50_000 - train, 60_000 - train)}
    found["epoch"] |= {1.0, float(PUBLISHED_EPOCHS), float(CANDIDATE_EPOCHS)}  # 1: --quick
    found["epoch"] |= {float(p.name[6:]) for p in (root / "results").rglob("epochs*")
                       if p.is_dir() and p.name[6:].isdigit()}
    found["seed"] |= {float(len(list(p.glob("seed*/")))) for p in (root / "results").rglob("*")
                      if p.is_dir() and any(p.glob("seed*/"))}
    for build in MODELS.values():
        model = build(weights="none") if build is models.resnet18_for_transfer else build()
        trained = models.count_parameters(model)
        total = sum(p.numel() for p in model.parameters())
        found["parameter"] |= {float(trained), float(total), float(total - trained)}
    return found


def free_numbers(text: str, where: str, known: dict[str, set[float]],
                 counted: dict[str, set[float]]) -> list[str]:
    """One line per measured number written by hand: a number with a unit, or a decimal point,
    that is neither generated nor a constant (a unitless value or a ratio of the package's,
    beside the words of the setting it is), and a count (COUNTED) that no setting, size or
    record of the package's gives."""
    lines = []
    for number, line in enumerate(blank(text).split("\n"), 1):
        for m in NUMBER.finditer(line):
            whole, fraction, fraction2, unit = m.groups()
            value = float(whole.replace(",", "") + (fraction or ""))
            if not unit and not fraction and not fraction2:
                noun = COUNTED.match(line, m.end())
                if noun is None or value in counted[noun.group(1)]:
                    continue  # a count the package knows, a year, a section, 32x32
            elif unit in (None, "x", "×") and stated(
                    value, CLAUSE.split(line[max(0, m.start() - 30):m.start()])[-1],
                    CLAUSE.split(line[m.end():m.end() + 40])[0], known):
                continue  # a setting's value as the code has it, beside the setting's name
            lines.append(f"{where}:{number}: {m.group(0).strip()} is a measured number written "
                         "by hand: generate it (<!-- value: -->) or point at its table")
    return lines


# ---------------------------------------------------------------- the command

def side_by_side_json(r: Results, check: bool) -> list[str]:
    """The side-by-side JSON, rewritten from the published logs and our seeds (or, with check,
    compared)."""
    path = r.dir / SIDE_BY_SIDE
    old = read_json(path, SideBySide)
    new = side_by_side(r)
    if new == old:
        return []
    if not check:
        save_json(new, path)
    return [f"results/{SIDE_BY_SIDE}: "
            + ("differs from the logs and seeds" if check else "rewritten")]


def regenerate(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or, with check, only compare) every figure and table; returns the lines that
    name what was stale (check) or what was written. Everything is read (and checked) before
    anything is written."""
    root = Path(root)
    r = Results(root)
    built = {name: make(r) for name, make in TABLES.items()}
    to_draw = figures_to_draw(r)
    texts = documents(root)
    lines = []
    lines += side_by_side_json(r, check)
    markdown = {name: t.markdown() for name, t in built.items()}
    for name, t in built.items():
        path = root / TABLE_DIR / f"{name}.csv"
        text = csv_table(t.header, t.rows)
        # a damaged table is stale, not unreadable: it is an output, compared
        if not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text:
            state = "stale" if path.is_file() else "missing"
            lines.append(f"{path.relative_to(root)}: {state if check else 'written'}")
            if not check:
                save_text(text, path)
    known, counted = constants(), counts(root, texts)
    for doc, old in texts.items():
        where = doc.relative_to(root).as_posix()
        new, errors = render_blocks(old, markdown, where)
        new, value_errors = render_values(new, root, where)
        lines += errors + value_errors
        for name, line in stale_blocks(old, new):
            lines.append(f"{where}:{line}: generated table {name} "
                         + ("differs from results/" if check else "rewritten"))
        lines += [f"{where}:{line_of(old, m.start())}: generated value {m.group(1)} "
                  f"{m.group(2)} " + ("differs from results/" if check else "rewritten")
                  for m, n in zip(VALUE.finditer(old), VALUE.finditer(new))
                  if m.group(4) != n.group(4)]
        lines += free_numbers(new, where, known, counted)
        if new != old and not check:
            save_text(new, doc)
    plots = root / PLOTS
    for fig in to_draw:
        problem = fig.problem(plots)
        if problem is None:
            continue
        if check:
            lines.append(f"{PLOTS}/{fig.name}: {problem}")
        else:
            fig.draw(plots)
            lines.append(f"{PLOTS}/{fig.name}: redrawn")
    return lines


@exits_cleanly
def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    lines = regenerate(Path(args.root), check=args.check)
    for line in lines:
        print(line)
    if args.check:
        print("up to date" if not lines else f"{len(lines)} stale: run python report.py",
              file=sys.stderr)
        return 1 if lines else 0
    print(f"regenerated from {Path(args.root) / 'results'} ({len(lines)} changed)",
          file=sys.stderr)
    return 1 if any(UNKNOWN in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())

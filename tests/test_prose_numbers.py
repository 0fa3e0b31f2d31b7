"""Prose that cannot drift: every measured number in README.md and docs/*.md outside the
generated tables is found in a file its own sentence names; and the machine record that tells
two CPUs apart (common.system.machine_record).

`python tests/test_prose_numbers.py` prints how many numbers the check covers, per document,
and every number that breaks the rule below.

The rule:

- **What is read.** README.md and docs/*.md without the `<!-- generated: NAME -->` ...
  `<!-- end generated -->` blocks (report.py writes those from results/, and `report.py
  --check` holds them), code blocks, code spans and link targets. The text is cut into units:
  one sentence of a paragraph or list item, or one table row.
- **Which numbers.** A number with a unit of measurement (%, s, ms, seconds, minutes, hours,
  x or ×, point(s), img/s, images/s, MB; both ends of a range "363-371 s"), and a number with a
  decimal point (a loss 0.590, a ratio 1.729).
- **Kinds that are not read** (NOT_READ, SETTING, BOUND): whole numbers without a unit
  (counts, epochs, seeds, years), section numbers (3.a), versions (2.14.1); a quotation in
  double quotes (the report's or a paper's words, "94% on CIFAR-10 in 3.29 Seconds") and an
  arXiv identifier; a setting's value, right after its name (lr 5e-2, momentum 0.9, std 0.25:
  the recipe's, not a measurement); a bound, right after within / under / at most / at least /
  more than / less than / up to / above / below / ≥ / ≤ (a threshold or a claim about a range,
  which a set of numbers cannot confirm).
- **Cited.** A unit cites the evidence it names: a code span or bare word that is a path into
  results/, bench/, common/, tests/, report.py or the report (`../shared/spec/...`). A file
  is read whole; a folder stands for the run records under it (metrics.json, results.json,
  logs, printed outputs: a history.csv is cited by its own path); `*` and `<N>` match any
  name; `results/` alone cites nothing. A unit that speaks of "the report" also cites the
  report, `../shared/spec/assignment3-report.txt`.
- **Matching.** A number is found when some number in a cited file, rounded to the digits the
  prose shows, equals it: 90.01 % matches 90.0123 and the fraction 0.9001 (a % or points also
  reads a file's value x 100); 427 s matches 427.2; 90 minutes matches 5,414 s (minutes and
  hours read seconds / 60 and / 3,600, ms seconds x 1,000). The sign is the prose's words
  ("0.58 points short" matches -0.58). After "about" (some, roughly, nearly, around) a whole
  number's trailing zeros are not digits shown: "about 110 s" is 105-115 s, so 115.5 does not
  match it; a plain "110 s" is 109.5-110.5 s.
- **An uncited number fails.** It is rewritten to name its file, or the sentence points at
  the generated table that holds it instead of restating it.
- Every path into the repository that the prose names exists (a figure of task 4, which was
  not run here, excepted).

What the check cannot see: a number found in its file at the wrong place (a cited file is a
set of numbers, not a field; the smaller and rounder the number, the likelier an accidental
match), and a number derived from a file (a difference, a sum), which no file holds: those are
read off a generated table (results/tables/NAME.csv) or left out.
"""
from __future__ import annotations

import glob
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

ROOT = Path(__file__).resolve().parents[1]
SPEC = "../shared/spec/assignment3-report.txt"
DOCS = ("README.md", "docs/*.md")

# ---------------------------------------------------------------- reading the prose

GENERATED = re.compile(r"<!-- generated: [\w-]+ -->.*?<!-- end generated -->", re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\([^)\n]*\)")
ABBREVIATIONS = ("e.g.", "i.e.", "vs.", "al.", "cf.", "etc.", "approx.")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s\d])")

UNIT = (r"(?:x|×)(?!\w)|\s?(?:%|ms\b|s\b|seconds?\b|minutes?\b|hours?\b|points?\b|img/s\b"
        r"|images/s\b|MB\b)")
NUMBER = re.compile(
    r"(?<![\w.\-/,+−])([-+−±]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
    r"(?:\s*[-–]\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?)?"
    rf"({UNIT})?(?![\w/]|[.,]\d)")
APPROXIMATE = re.compile(r"\b(?:about|some|roughly|nearly|around)\s*$|~\s*$")
# The kinds of number that are not read, by the text that comes before them or around them.
NOT_READ = {
    "quotation": re.compile(r"\"[^\"\n]*\""),
    "arXiv identifier": re.compile(r"arXiv \d{4}\.\d+"),
}
SETTING = re.compile(
    r"(?:\blr|\brate|\bmomentum|\bdecay|\bstd|\bmean|\beps|\bsmoothing|\bslope|\bgain|\bp"
    r"|\bhue|\bsaturation|\bbetas|\bfraction|\bprobability|\bthreshold|\bopacity)"
    r"\s*[(=]?\s*$")
BOUND = re.compile(r"(?:\bwithin|\bunder|\bat most|\bat least|\bmore than|\bless than|\bup to"
                   r"|\babove|\bbelow|[≥≤<>])\s*$")
REPORT = re.compile(r"\breport(?:'s)?\b(?!\.py)", re.IGNORECASE)
PATH = re.compile(r"(?:\.\./shared/spec/[\w.-]+|(?:results|plots|bench|common|tests|docs)"
                  r"/[\w.*<>/-]*|README\.md|report\.py)")
EVIDENCE = re.compile(r"(?:\.\./shared/spec/|results/|bench/|common/|tests/|report\.py)")
RUN_RECORDS = ("metrics.json", "results.json", "*.log", "*.txt")
NOT_RUN_HERE = re.compile(r"plots/task4")  # task 4 needs ImageNet weights (docs/task4.md)


@dataclass(frozen=True)
class Number:
    text: str          # as the prose shows it
    value: float       # its magnitude
    half_width: float  # half a unit of the last digit shown
    unit: str          # "", "%", "s", "min", "h", "ms", "x", "points", "img/s", "MB"
    at: int = 0        # where it stands in its unit's text


@dataclass(frozen=True)
class Unit:
    doc: str
    line: int
    text: str          # the prose, code spans kept
    numbers: tuple[Number, ...]
    cites: tuple[str, ...]
    lines: tuple[tuple[int, int], ...] = ()  # (offset in text, line) where each line begins

    def line_of(self, number: Number) -> int:
        return max((n for start, n in self.lines if start <= number.at), default=self.line)


def _blank(match: re.Match) -> str:
    return "\n" * match.group(0).count("\n")


def _blocks(text: str) -> list[tuple[list[tuple[int, int]], str, bool]]:
    """Each paragraph, list item, table row and heading: ([(offset in its text, line)], its
    text with the lines joined, whether it is a table row)."""
    text = FENCE.sub(_blank, GENERATED.sub(_blank, text))
    blocks, current, previous_blank = [], [], True

    def close():
        if current:
            offsets, joined = [], ""
            for number, line in current:
                offsets.append((len(joined) + (1 if joined else 0), number))
                joined = f"{joined} {line}" if joined else line
            blocks.append((offsets, joined, False))
            current.clear()

    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        is_code = line.startswith("    ") and previous_blank and not current
        if not stripped or re.match(r"\s*(?:[-*] |\d+\. |#)", line) or stripped.startswith("|"):
            close()
        if stripped.startswith("|"):
            blocks.append(([(0, number)], stripped, True))
        elif stripped and not is_code:
            current.append((number, stripped))
        previous_blank = not stripped or (is_code and previous_blank)
    close()
    return blocks


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) of each sentence of a paragraph or list item."""
    pieces, start = [], 0
    for m in SENTENCE_END.finditer(text):
        words = text[start:m.start()].split()
        if words and words[-1].lower() in ABBREVIATIONS:
            continue
        pieces.append((start, text[start:m.start()]))
        start = m.end()
    pieces.append((start, text[start:]))
    return [(offset, p) for offset, p in pieces if p.strip()]


def _unit_name(raw: str | None) -> str:
    raw = (raw or "").strip()
    return {"×": "x", "point": "points", "second": "s", "seconds": "s", "minute": "min",
            "minutes": "min", "hour": "h", "hours": "h", "images/s": "img/s"}.get(raw, raw)


def _number(whole: str, fraction: str | None, unit: str, approximate: bool, at: int) -> Number:
    digits = whole.replace(",", "")
    if fraction:
        half = 0.5 * 10 ** -(len(fraction) - 1)
    else:
        zeros = len(digits) - len(digits.rstrip("0")) if approximate and digits != "0" else 0
        half = 0.5 * 10 ** zeros
    return Number(whole + (fraction or "") + (f" {unit}" if unit else ""),
                  float(digits + (fraction or "")), half, unit, at)


def _prose_only(text: str) -> str:
    """The text the numbers are read from: code spans, link targets, quotations and arXiv
    identifiers blanked to spaces (nothing joins across them, and every character keeps its
    place)."""
    for pattern in (CODE_SPAN, LINK_TARGET, *NOT_READ.values()):
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def numbers_in(text: str) -> list[Number]:
    """The numbers the check reads in one unit of prose."""
    plain = _prose_only(text)
    found = []
    for m in NUMBER.finditer(plain):
        sign, whole, fraction, whole2, fraction2, unit = m.groups()
        unit = _unit_name(unit)
        before = plain[:m.start()]
        if not unit and not fraction and not fraction2:
            continue  # a whole number without a unit: a count, an epoch, a year
        if (SETTING.search(before) and not unit) or BOUND.search(before):
            continue
        approximate = bool(APPROXIMATE.search(before))
        found.append(_number(whole, fraction, unit, approximate, m.start(2)))
        if whole2 is not None:
            found.append(_number(whole2, fraction2, unit, approximate, m.start(4)))
    return found


def paths_named(text: str) -> list[str]:
    """The repository paths a unit names: code spans that are one path, and bare paths."""
    named = []
    for span in CODE_SPAN.findall(text):
        inner = span.strip("`").rstrip(".,:;")
        if " " not in inner and PATH.fullmatch(inner):
            named.append(inner)
    bare = LINK_TARGET.sub("]", CODE_SPAN.sub(" ", text))
    named += [m.group(0).rstrip(".,:;") for m in re.finditer(r"(?<![\w/.])" + PATH.pattern, bare)]
    return named


def citations(text: str) -> list[str]:
    """The evidence a unit cites: the paths it names into results/, code or the report, and
    the report itself when it speaks of the report."""
    cited = [p for p in paths_named(text) if EVIDENCE.match(p) and p.rstrip("/") != "results"]
    if REPORT.search(_prose_only(text)):
        cited.append(SPEC)
    return cited


def prose_units(doc: Path, root: Path = ROOT) -> list[Unit]:
    units = []
    for offsets, text, is_row in _blocks(doc.read_text(encoding="utf-8")):
        for offset, sentence in ([(0, text)] if is_row else _sentences(text)):
            line = max(n for start, n in offsets if start <= offset)
            lines = tuple((start - offset, n) for start, n in offsets if start >= offset)
            units.append(Unit(doc.relative_to(root).as_posix(), line, sentence,
                              tuple(numbers_in(sentence)), tuple(citations(sentence)),
                              ((0, line),) + lines))
    return units


# ---------------------------------------------------------------- reading the evidence

FILE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _pattern(path: str) -> str:
    return re.sub(r"<[^>]*>|\bNAME\b", "*", path)


def _files(cited: str, root: Path) -> list[Path]:
    pattern = _pattern(cited)
    paths = [Path(p) for p in glob.glob(str(root / pattern))] if "*" in pattern else [
        root / pattern]
    files = []
    for path in paths:
        if path.is_dir():
            files.extend(p for name in RUN_RECORDS for p in sorted(path.rglob(name)))
        elif path.is_file():
            files.append(path)
    return files


_VALUES: dict[Path, frozenset[float]] = {}


def values_in(path: Path) -> frozenset[float]:
    """The magnitude of every number in a text file, read with and without thousands
    separators."""
    if path not in _VALUES:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            text = ""
        joined = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
        _VALUES[path] = frozenset(abs(float(x)) for t in (text, joined)
                                  for x in FILE_NUMBER.findall(t))
    return _VALUES[path]


SCALES = {"%": (1, 100), "points": (1, 100), "min": (1, 1 / 60), "h": (1, 1 / 3600),
          "ms": (1, 1000)}


def found(number: Number, values) -> bool:
    """Whether one of a file's values, read in the prose's unit and rounded as shown, is it."""
    tolerance = number.half_width * (1 + 1e-9) + 1e-12
    return any(abs(v * k - number.value) <= tolerance
               for v in values for k in SCALES.get(number.unit, (1,)))


def _absent(cited: str, root: Path) -> bool:
    """The report (../shared/spec/) where no copy of shared/ lies beside the clone: the suite
    passes without it; CI and the developers' checkouts have it."""
    return cited.startswith("../") and not (root / cited).exists()


def problems_in(units: list[Unit], root: Path = ROOT) -> tuple[list[str], int]:
    """(one line per number that breaks the rule, how many numbers were checked)."""
    problems, checked = [], 0
    for unit in units:
        if not unit.numbers or any(_absent(c, root) for c in unit.cites):
            continue  # part of its evidence lies beside the repository, and is not here
        files = [f for c in unit.cites for f in _files(c, root)]
        values = frozenset().union(*(values_in(f) for f in files))
        for number in unit.numbers:
            checked += 1
            where = f"{unit.doc}:{unit.line_of(number)}: {number.text}"
            if not files:
                problems.append(f"{where} cites no file: {unit.text[:160]}")
            elif not found(number, values):
                problems.append(f"{where} is not in {', '.join(unit.cites)}: {unit.text[:160]}")
    return problems, checked


def documents(root: Path = ROOT) -> list[Path]:
    return [p for pattern in DOCS for p in sorted(root.glob(pattern))]


def check(root: Path = ROOT) -> tuple[list[str], dict[str, int]]:
    """(every problem, how many numbers were checked in each document)."""
    problems, counts = [], {}
    for doc in documents(root):
        p, counts[doc.relative_to(root).as_posix()] = problems_in(prose_units(doc, root), root)
        problems += p
    return problems, counts


def missing_paths(root: Path = ROOT) -> list[str]:
    """The repository paths the prose names that do not exist."""
    missing = []
    for doc in documents(root):
        for unit in prose_units(doc, root):
            for path in paths_named(unit.text):
                if NOT_RUN_HERE.match(path) or _absent(path, root):
                    continue
                target = (root / _pattern(path))
                if not (glob.glob(str(target)) if "*" in str(target) else target.exists()):
                    missing.append(f"{unit.doc}:{unit.line}: {path}")
    return missing


# ---------------------------------------------------------------- the committed documents

def test_every_measured_prose_number_is_in_the_file_its_sentence_cites(capsys):
    problems, counts = check()
    with capsys.disabled():
        print(f"\nprose numbers checked against their files: {sum(counts.values())} in "
              f"{len(counts)} documents")
    assert problems == []
    assert sum(counts.values()) >= 100  # the check reads the documents, not nothing


def test_every_path_the_prose_names_exists():
    assert missing_paths() == []


# ---------------------------------------------------------------- a planted wrong number

@pytest.fixture
def docs_copy(tmp_path):
    """README.md and docs/ copied; the evidence (results/, the code, plots/ and the report
    beside the repository) linked where the copy's citations look for it."""
    root = tmp_path / "main"
    root.mkdir()
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copytree(ROOT / "docs", root / "docs")
    for name in ("results", "common", "bench", "tests", "plots", "report.py"):
        (root / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to((ROOT / SPEC).parents[1])
    return root


def plant(path: Path, old: str, new: str):
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_copy_passes_before_anything_is_planted(docs_copy):
    problems, counts = check(docs_copy)
    assert problems == [] and counts == check()[1]


@pytest.mark.parametrize("doc, old, new, caught", [
    # the audit's numbers, put back: the probe log says 3.30x, the seeds' records 2.74x
    ("docs/speedrun.md", "bf16 3.30x faster", "bf16 3.21x faster", "3.21 x is not in"),
    ("docs/speedrun.md", "2.74x for ours", "3.16x for ours", "3.16 x is not in"),
    # one digit of a cited time
    ("README.md", "the second 2,095 s", "the second 2,059 s", "2,059 s is not in"),
    # a percentage read from a fraction (0.7428 in the log)
    ("docs/speedrun.md", "scored 74.28 %", "scored 74.82 %", "74.82 % is not in"),
    # a number that cites nothing
    ("docs/speedrun.md", "Neither session's candidates (below) closed the gap.",
     "Neither session's candidates (below) closed the 0.58 points.", "0.58 points cites no file"),
])
def test_a_planted_wrong_number_is_caught_with_its_line(docs_copy, doc, old, new, caught):
    plant(docs_copy / doc, old, new)
    problems, _ = check(docs_copy)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{doc}:") and caught in problems[0]
    line = int(problems[0].split(":")[1])
    planted = caught.split(" is not")[0].split(" cites")[0].split()[0]
    assert planted in (docs_copy / doc).read_text(encoding="utf-8").splitlines()[line - 1]


def test_a_planted_path_that_does_not_exist_is_caught(docs_copy):
    plant(docs_copy / "docs/usage.md", "plots/default_bf16_task3_model1_confusion.png",
          "plots/task3_model1_confusion.png")
    assert [m.split(": ")[1] for m in missing_paths(docs_copy)] == [
        "plots/task3_model1_confusion.png"]


# ---------------------------------------------------------------- the rule, case by case

def numbers(text: str) -> list[str]:
    return [n.text for n in numbers_in(text)]


def test_what_is_read_and_what_is_not():
    assert numbers("Model 1 reached 79.62 % in 5,414 s, 3.30x the rate, 0.58 points short, "
                   "loss 0.590 / 85.10 %; 363-371 s; 90 minutes.") == [
        "79.62 %", "5,414 s", "3.30 x", "0.58 points", "0.590", "85.10 %", "363 s", "371 s",
        "90 min"]
    # counts, epochs, sections, versions, code, quotations, settings, bounds: not read
    assert numbers("11 epochs of 50,000 images, report 3.a, torch 2.14.1, `--lr 0.05`, "
                   "\"94% on CIFAR-10 in 3.29 Seconds\" (arXiv 2404.00498), momentum 0.9, "
                   "lr 5e-2, std 0.25, more than 5 % faster, at least 2 seconds, a 3x3 or "
                   "3 x 3 kernel, ≥ 0.95 ×, 64/256/256") == []


def test_sentences_and_rows_are_the_units_and_generated_blocks_are_skipped(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title 1.5 s\n\nFirst 1.25 s, e.g. `results/a.json` here. Second\n"
                   "1.5 s. bf16 next 2.5 s.\n\n| row | 3.5 s | `results/b.json` |\n\n"
                   "<!-- generated: t -->\n4.5 s\n<!-- end generated -->\n\n```\n5.5 s\n```\n"
                   "\n    6.5 s in an indented code block\n\n- item 7.5 s\n  continued 8.5 s\n")
    units = [(u.line, [n.text for n in u.numbers], list(u.cites))
             for u in prose_units(doc, tmp_path) if u.numbers]
    assert units == [(1, ["1.5 s"], []), (3, ["1.25 s"], ["results/a.json"]), (3, ["1.5 s"], []),
                     (4, ["2.5 s"], []), (6, ["3.5 s"], ["results/b.json"]),
                     (18, ["7.5 s", "8.5 s"], [])]


def test_the_report_is_cited_by_speaking_of_it_and_results_alone_cites_nothing():
    assert citations("the report's 82.76 %") == [SPEC]
    assert citations("`python report.py` in 26 s") == []
    assert citations("read from `results/` (10 s)") == []
    assert citations("in `results/task3/model1/history.csv`.") == [
        "results/task3/model1/history.csv"]


@pytest.mark.parametrize("shown, values, expected", [
    ("90.01 %", {90.0123}, True), ("90.01 %", {0.9001}, True), ("90.01 %", {0.90016}, False),
    ("427 s", {427.2}, True), ("90 minutes", {5414.0}, True), ("18 minutes", {986.0}, False),
    ("about 110 s", {115.5}, False), ("about 110 s", {112.0}, True), ("110 s", {112.0}, False),
    ("0.58 points", {0.58}, True), ("3.21x", {3.30, 3.29, 3.38}, False), ("130 ms", {0.13}, True),
])
def test_a_number_matches_a_file_value_rounded_as_the_prose_shows_it(shown, values, expected):
    [number] = numbers_in(shown)
    assert found(number, frozenset(values)) is expected


@given(st.floats(0.001, 99_999, allow_nan=False), st.integers(0, 4))
def test_a_value_shown_at_any_rounding_is_found_and_one_a_unit_further_off_is_not(value,
                                                                                  digits):
    shown = f"{value:.{digits}f} s"
    [number] = numbers_in(shown)
    assert found(number, {value})
    assert not found(number, {round(value, digits) + 1.5 * 10 ** -digits})


# ---------------------------------------------------------------- the machine record

def machine_record_from(monkeypatch, tmp_path, cpuinfo: str | None) -> dict:
    from common import system
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(system, "CPUINFO", str(path))
    return system.machine_record(torch.device("cpu"))


XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: another block, not read
stepping\t: 6
flags\t\t: fpu
"""


def test_the_machine_record_names_vendor_family_model_stepping_and_the_flags(monkeypatch,
                                                                           tmp_path):
    record = machine_record_from(monkeypatch, tmp_path, XEON)
    assert record == {"cpu": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel",
                      "family": 6, "model": 143, "stepping": 8, "avx2": True, "avx512f": True,
                      "avx512_bf16": True, "amx": True, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "device": "cpu"}
    # two Xeons with one model name are two records
    other = XEON.replace("model\t\t: 143", "model\t\t: 106").replace("stepping\t: 8",
                                                                     "stepping\t: 6")
    assert machine_record_from(monkeypatch, tmp_path, other) != record


def test_the_machine_record_says_none_for_what_cpuinfo_lacks(monkeypatch, tmp_path):
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nstepping\t: unknown\n"
    record = machine_record_from(monkeypatch, tmp_path, arm)
    assert {k: record[k] for k in ("vendor", "family", "model", "stepping")} == dict.fromkeys(
        ("vendor", "family", "model", "stepping"))
    assert not any(record[k] for k in ("avx2", "avx512f", "avx512_bf16", "amx"))
    assert record["cpu"]  # the platform's name where the file has none
    nothing = machine_record_from(monkeypatch, tmp_path / "absent", None)
    assert nothing["vendor"] is None and nothing["amx"] is False and nothing["threads"] >= 1


if __name__ == "__main__":
    problems, counts = check()
    for doc, count in counts.items():
        print(f"{count:4d}  {doc}")
    print("\n".join(problems + missing_paths()))
    print(f"{sum(counts.values())} prose numbers checked against their files, "
          f"{len(problems)} problems")
    sys.exit(1 if problems else 0)

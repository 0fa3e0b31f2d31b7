"""The machine record (common.system.machine_record): one shape (common.system.Machine) in every
run and file under results/, the fields that tell two CPUs apart as whole numbers, None where
the machine did not tell; report.same_cpu compares two by it, and report.py accepts the
side-by-side and the bracket only when the published script's record (bench.machine_record,
beside its log) is our seeds' machine."""
import json
import shutil

import pytest
import torch

import report
from bench import machine_record
from common import system
from common.errors import UserError
from common.config import checked
from common.system import Machine


def problem(record) -> str | None:
    """What the one validator says of a machine record read from m.json, or None."""
    try:
        checked(record, Machine, "m.json")
    except UserError as err:
        return str(err)
    return None


def machine_record_from(monkeypatch, tmp_path, cpuinfo: str | None) -> dict:
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
                      "family": 6, "model": 143, "stepping": 8,
                      "flags": {"avx2": True, "avx512f": True, "avx512_bf16": True,
                                "amx": True},
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "device": "cpu"}
    assert problem(record) is None
    # two Xeons with one model name are two records
    other = XEON.replace("model\t\t: 143", "model\t\t: 106").replace("stepping\t: 8",
                                                                     "stepping\t: 6")
    assert machine_record_from(monkeypatch, tmp_path, other) != record
    without_amx = XEON.replace(" amx_bf16 amx_tile", "")
    assert machine_record_from(monkeypatch, tmp_path, without_amx)["flags"] == {
        "avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False}


def test_the_machine_record_says_none_for_what_cpuinfo_lacks(monkeypatch, tmp_path):
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nstepping\t: unknown\n"
    record = machine_record_from(monkeypatch, tmp_path, arm)
    assert {k: record[k] for k in ("vendor", "family", "model", "stepping")} == dict.fromkeys(
        ("vendor", "family", "model", "stepping"))
    # no flags line: not recorded, not "lacks every flag"
    assert record["flags"] == dict.fromkeys(("avx2", "avx512f", "avx512_bf16", "amx"))
    assert record["cpu"]  # the platform's name where the file has none
    assert problem(record) is None
    nothing = machine_record_from(monkeypatch, tmp_path / "absent", None)
    assert nothing["vendor"] is None and nothing["flags"]["amx"] is None
    assert nothing["threads"] >= 1


def test_machine_record_writes_the_record_every_run_keeps(tmp_path, capsys):
    machine_record.main([str(tmp_path / "m.json")])
    record = json.loads((tmp_path / "m.json").read_text())
    assert problem(record) is None
    assert record == system.machine_record(torch.device("cpu"))


@pytest.mark.parametrize("field, value, expected", [
    ("family", "25", "m.json: family '25': must be a whole number"),
    ("stepping", 1.5, "m.json: stepping 1.5: must be a whole number"),
])
def test_a_machine_record_with_family_or_stepping_as_text_is_not_the_shape(field, value,
                                                                           expected, monkeypatch,
                                                                           tmp_path):
    record = machine_record_from(monkeypatch, tmp_path, XEON)
    assert problem(record | {field: value}) == expected
    flat = {k: v for k, v in record.items() if k != "flags"} | record["flags"]
    assert problem(flat) == "m.json: flags: is missing"  # the old flat flags


def machine_records(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from [inner] if key == "machine" else machine_records(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from machine_records(inner)


def test_every_machine_record_under_results_has_the_one_shape():
    found = {}
    for path in sorted((report.ROOT / "results").rglob("*.json")):
        data = json.loads(path.read_text())
        records = [data] if path.name.endswith(".machine.json") else machine_records(data)
        for record in records:
            found[str(path.relative_to(report.ROOT))] = problem(record)
    assert len(found) >= 40  # every seed, run and profile that keeps one
    assert {path: problem for path, problem in found.items() if problem} == {}


def test_same_cpu_compares_every_field_both_records_hold(monkeypatch, tmp_path):
    record = machine_record_from(monkeypatch, tmp_path, XEON)
    assert report.same_cpu(record, dict(record))
    # a field one record did not hold cannot tell them apart
    assert report.same_cpu(record, record | {"family": None, "model": None, "stepping": None})
    assert report.same_cpu(record, record | {"flags": record["flags"] | {"avx2": None}})
    # any field or flag both hold that differs is another CPU, or another thread count
    for other in ({"stepping": 7}, {"vendor": "AuthenticAMD"}, {"threads": 64},
                  {"flags": record["flags"] | {"amx": False}}):
        assert not report.same_cpu(record, record | other), other


@pytest.mark.slow
def test_a_published_log_from_another_machine_is_refused(tmp_path, capsys):
    for name in ("results", "docs", "plots"):
        shutil.copytree(report.ROOT / name, tmp_path / name)
    shutil.copy(report.ROOT / "README.md", tmp_path)
    seed = next((tmp_path / "results" / report.SPEEDRUN).glob("seed*/metrics.json"))
    ours = json.loads(seed.read_text())["machine"]
    beside = tmp_path / "results" / report.PUBLISHED_LOGS / "epochs8.machine.json"
    beside.write_text(json.dumps(ours))
    assert report.main(["--root", str(tmp_path)]) == 0  # one machine: accepted, and shown
    side = json.loads((tmp_path / "results" / report.SIDE_BY_SIDE).read_text())
    assert [p["machine_recorded"] for p in side["frontier"]["published"]] == [False, False, True]
    beside.write_text(json.dumps(ours | {"cpu": "another CPU"}))
    with pytest.raises(SystemExit) as exit_:
        report.main(["--check", "--root", str(tmp_path)])
    assert exit_.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "epochs8.log" in line and "not our seeds'" in line


@pytest.mark.slow
def test_the_bracket_needs_both_published_records_and_both_of_our_machine(tmp_path, capsys):
    """Issue 33's bracket: the published runs before and after ours each keep a machine record;
    one from another CPU, or none, is one line naming the log, exit 2."""
    for name in ("results", "docs", "plots"):
        shutil.copytree(report.ROOT / name, tmp_path / name)
    shutil.copy(report.ROOT / "README.md", tmp_path)
    assert report.main(["--check", "--root", str(tmp_path)]) == 0
    logs = tmp_path / "results" / report.BRACKET_LOGS
    after = logs / "epochs8_after.machine.json"
    record = json.loads(after.read_text())
    after.write_text(json.dumps(record | {"model": record["model"] + 1}))
    with pytest.raises(SystemExit) as exit_:
        report.main(["--check", "--root", str(tmp_path)])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "epochs8_after.log" in line and "not our seeds'" in line
    after.unlink()
    with pytest.raises(SystemExit) as exit_:
        report.main(["--check", "--root", str(tmp_path)])
    assert exit_.value.code == 2
    assert "epochs8_after.machine.json" in capsys.readouterr().err.strip().splitlines()[-1]

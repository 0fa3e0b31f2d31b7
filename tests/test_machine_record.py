"""The published script's machine record beside its log (bench.machine_record): report.py
accepts the side-by-side only when that record is our seeds' machine."""
import json
import shutil

import pytest

import report
from bench import machine_record


def test_machine_record_writes_the_record_every_run_keeps(tmp_path, capsys):
    machine_record.main([str(tmp_path / "m.json")])
    record = json.loads((tmp_path / "m.json").read_text())
    assert {"cpu", "vendor", "family", "model", "stepping", "threads", "torch",
            "avx512_bf16", "amx"} <= set(record)


@pytest.mark.slow
def test_a_published_log_from_another_machine_is_refused(tmp_path, capsys):
    for name in ("results", "docs", "plots"):
        shutil.copytree(report.ROOT / name, tmp_path / name)
    shutil.copy(report.ROOT / "README.md", tmp_path)
    seed = next((tmp_path / "results" / report.SPEEDRUN).glob("seed*/metrics.json"))
    ours = json.loads(seed.read_text())["machine"]
    beside = tmp_path / "results" / report.PUBLISHED_LOGS / "epochs8.machine.json"
    beside.write_text(json.dumps(ours))
    assert report.main(["--check", "--root", str(tmp_path)]) == 0  # one machine: accepted
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

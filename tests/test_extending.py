"""docs/extending.md followed as written: on a copy of the clone with tiny data in
data/cifar10, each of the guide's code blocks is applied where its sentence says (at the end
of a file, replacing an assignment, inside one, saved as a new file) or run (Python from the
clone's folder, the commands); then the fast tier's registry test passes on the result."""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT

GUIDE = ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)
# what a sentence before a block asks, in the guide's words
AT_END = re.compile(r"At the end of `([^`]+)`")
BECOMES = re.compile(r"In `([^`]+)`, `(\w+)` becomes")
INSIDE = re.compile(r"In\s+`([^`]+)`, inside\s+`(\w+) = ")
SAVE_AS = re.compile(r"save as `([^`]+)`", re.I)
RUN_PYTHON = "In Python, from the clone's folder"


def steps(page: str) -> list[tuple]:
    """(what, language, code, target) for each code block, `what` read from the prose since
    the block before; a block no sentence places is a step the guide leaves to guesswork."""
    out, prose_start = [], 0
    for block in FENCE.finditer(page):
        prose = page[prose_start:block.start()]
        prose_start = block.end()
        language, code = block.group(1), block.group(2)
        if language == "bash":
            out.append(("commands", language, code, None))
        elif (m := AT_END.search(prose)):
            out.append(("append", language, code, m.group(1)))
        elif (m := BECOMES.search(prose)):
            out.append(("replace", language, code, (m.group(1), m.group(2))))
        elif (m := INSIDE.search(prose)):
            out.append(("inside", language, code, (m.group(1), m.group(2))))
        elif (m := SAVE_AS.search(prose)):
            out.append(("save", language, code, m.group(1)))
        elif RUN_PYTHON in prose:
            out.append(("python", language, code, None))
        else:
            raise AssertionError(f"no sentence says what to do with this block:\n{code}")
    return out


def assignment(source: str, name: str) -> ast.Assign:
    found = [node for node in ast.parse(source).body if isinstance(node, (ast.Assign,
             ast.AnnAssign)) and name in [getattr(t, "id", None) for t in
                                          getattr(node, "targets", [getattr(node, "target", None)])]]
    assert len(found) == 1, f"{name} is assigned {len(found)} times at the top level"
    return found[0]


def apply(clone: Path, what: str, code: str, target):
    if what == "append":
        path = clone / target
        path.write_text(path.read_text().rstrip("\n") + "\n\n\n" + code)
    elif what == "save":
        (clone / target).write_text(code)
    else:  # replace an assignment, or add before the line that closes it
        path, name = clone / target[0], target[1]
        lines = path.read_text().splitlines(keepends=True)
        node = assignment("".join(lines), name)
        if what == "replace":
            lines[node.lineno - 1:node.end_lineno] = [code]
        else:
            lines[node.end_lineno - 1:node.end_lineno - 1] = [code]
        path.write_text("".join(lines))


def run_in(clone: Path, argv: list[str], env: dict) -> str:
    done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(argv)}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_guide_followed_as_written_trains_both_ways_and_keeps_the_fast_tier_passing(
        fake_image_folder, tmp_path, _session_cache):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "outputs", "data", "results", "plots", "__pycache__", ".pytest_cache",
        "build", "*.egg-info"))
    shutil.copytree(fake_image_folder, clone / "data" / "cifar10")  # the default data folder
    test_image = next((fake_image_folder / "test" / "cat").iterdir())
    Image.open(test_image).save(clone / "cat.png")  # the user's photo the guide classifies
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR10_DIR", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(_session_cache)
    outputs = []
    for number, (what, language, code, target) in enumerate(steps(GUIDE.read_text())):
        if what == "python":
            script = clone / f"guide_step{number}.py"
            script.write_text(code)
            outputs.append(run_in(clone, [sys.executable, script.name], env))
        elif what == "commands":
            for line in code.splitlines():
                argv = shlex.split(line, comments=True)
                assert argv[0] == "python", line
                outputs.append(run_in(clone, [sys.executable, *argv[1:]], env))
        else:
            apply(clone, what, code, target)
    # both ways trained and were read back: the module passed in, the model registered
    assert (clone / "outputs" / "task2" / "poolnet" / "best.pt").is_file()
    assert '"model_class": "__main__.PoolNet"' in (
        clone / "outputs" / "task2" / "poolnet" / "config.json").read_text()
    assert '"model": "tiny"' in (clone / "outputs" / "mytask" / "tiny" / "config.json").read_text()
    assert "tensor([[" in outputs[0] and "cat.png: " in "".join(outputs)
    assert "label smoothing 0.1" in "".join(outputs)  # the variant's row in the study's table
    # the fast tier's registry test, on the clone as the guide left it
    run_in(clone, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_api.py::test_the_registry_holds_every_run_the_scripts_train_"
                   "with_a_model_the_package_builds"], env)


def test_every_block_of_the_guide_is_placed_by_its_sentence():
    kinds = [what for what, *_ in steps(GUIDE.read_text())]
    assert kinds == ["python", "append", "replace", "append", "python", "save", "commands",
                     "inside", "commands"]

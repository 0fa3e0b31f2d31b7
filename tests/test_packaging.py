"""What `pip install .` puts in an environment: the library alone, as cifar10_tasks (no generic
top-level name), torch as a range while requirements.txt pins what we test, the test tools,
ONNX and TensorBoard as extras; a feature asked for without its extra is one line (exit 2) on
the command line and an ImportError in Python."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from common import api
from common.errors import MissingExtra
from conftest import ROOT, args, load_script, one_error_line, run

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = {"export": {"onnx", "onnxscript", "onnxruntime"}, "tensorboard": {"tensorboard"},
          "test": {"pytest", "hypothesis"}}


def requirements_txt() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text()
             .splitlines()]
    return {(r := Requirement(line)).name: r for line in lines if line}


def test_the_library_installs_as_cifar10_tasks_alone_and_never_names_itself_common():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["packages"] == ["cifar10_tasks"]
    assert setuptools["package-dir"] == {"cifar10_tasks": "common"}
    # installed under another name, common/ works only if it imports itself relatively
    absolute = [f"{path.name}:{node.lineno}" for path in sorted((ROOT / "common").glob("*.py"))
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 0
                and (node.module or "").split(".")[0] == "common"
                or isinstance(node, ast.Import)
                and any(a.name.split(".")[0] == "common" for a in node.names)]
    assert absolute == []


def test_pyproject_states_ranges_and_extras_and_requirements_txt_pins_the_same_packages():
    project = PYPROJECT["project"]
    needed = {(r := Requirement(d)).name: r for d in project["dependencies"]}
    extras = {name: {(r := Requirement(d)).name: r for d in deps}
              for name, deps in project["optional-dependencies"].items()}
    assert {name: set(reqs) for name, reqs in extras.items()} == EXTRAS
    assert not set(needed) & set().union(*EXTRAS.values())  # tools are not run-time needs
    assert "torch" in needed and "torchvision" in needed
    assert not [r for r in needed.values() if "==" in str(r.specifier)]  # ranges, not pins
    torch = needed["torch"].specifier
    assert "2.14.1" in torch and "2.9.0" in torch and "2.8.0" not in torch and "3.0" not in torch
    pins = requirements_txt()
    everything = {**needed, **{k: r for reqs in extras.values() for k, r in reqs.items()}}
    assert set(pins) == set(everything)
    exact = {name: str(r.specifier)[2:] for name, r in pins.items()
             if str(r.specifier).startswith("==")}
    assert {"torch", "torchvision", "tensorboard", "onnx", "onnxscript", "onnxruntime"} <= \
        set(exact)
    for name, version in exact.items():  # what we test lies in what we promise
        assert everything[name].specifier.contains(version, prereleases=True), (name, version)


@pytest.mark.slow
def test_the_wheel_holds_only_cifar10_tasks_and_imports_outside_the_clone(tmp_path):
    source = tmp_path / "source"  # built from a copy: the clone gets no build/ folder
    shutil.copytree(ROOT / "common", source / "common",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(source)], check=True, timeout=300)
    wheel, = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names} == {"cifar10_tasks", "cifar10_tasks-0.1.0.dist-info"}
    assert "cifar10_tasks/api.py" in names and not [n for n in names if "task1" in n
                                                     or "bench" in n]
    requires = [line[len("Requires-Dist: "):] for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    assert "torch<3,>=2.9" in requires and 'pytest; extra == "test"' in requires
    assert not [r for r in requires if r.split(";")[0].split("<")[0].split(">")[0].split("=")[0]
                in ("pytest", "hypothesis", "onnx", "tensorboard") and "extra ==" not in r]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", "import sys; from cifar10_tasks import api; "
                           "print(api.__file__, 'common' in sys.modules)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == [str(target / "cifar10_tasks" / "api.py"), "False"], \
        done.stderr


# ---------------------------------------------------------------- an extra not installed

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fake_image_folder, _session_cache) -> api.TrainedRun:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(_session_cache))
        return api.train("task2", "cnn1g", data_dir=fake_image_folder, subset=100, epochs=1,
                         batch_size=20, precision="fp32",
                         output_dir=tmp_path_factory.mktemp("extras"))


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_export_without_its_extra_is_an_import_error_in_python_and_one_line_exit_2(
        missing, finished_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # what import finds of a module not there
    target = tmp_path / "model.onnx"
    with pytest.raises(ImportError) as info:
        api.export_onnx(finished_run, target)
    assert isinstance(info.value, MissingExtra) and info.value.name == missing
    assert str(info.value) == (
        f"ONNX export needs {missing}, which is not installed: pip install "
        "'cifar10-tasks[export]' (in the clone: pip install -e '.[export]' or pip install -r "
        "requirements.txt)")
    code, err = run(load_script("predict"), ["--run", str(finished_run.run_dir), "--export",
                                             str(target)], capsys)
    assert code == 2 and one_error_line(err) == f"error: {info.value}"
    assert not target.exists()


def test_tensorboard_without_its_extra_is_refused_before_anything_is_read_or_written(
        fake_image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    out = tmp_path / "out"
    code, err = run(load_script("task2"), args(fake_image_folder, out, "--tensorboard"), capsys)
    assert code == 2 and one_error_line(err).startswith(
        "error: TensorBoard logging needs tensorboard, which is not installed: pip install "
        "'cifar10-tasks[tensorboard]'")
    assert not out.exists()
    with pytest.raises(ImportError, match=r"cifar10-tasks\[tensorboard\]"):
        api.train("task2", "cnn1g", data_dir=fake_image_folder, output_dir=out, subset=100,
                  tensorboard=True)
    assert not out.exists()

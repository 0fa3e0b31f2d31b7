"""Tests of report task 4 (ResNet18 transfer learning), all with random weights and small images:
frozen/trainable counts, shapes, the weight sources and their errors, both scripts end to end."""
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common import models as resnet
from common import plotting
from common.models import count_parameters
from conftest import load_script

task4a = load_script("task4a")
task4bc = load_script("task4bc")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_state_file(tmp_path_factory) -> Path:
    """A torchvision resnet18 state_dict (random weights) as a file, like resnet18-f37072fd.pth."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(resnet.load_resnet18("none").state_dict(), path)
    return path


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def exit_error(capsys, main, argv) -> str:
    """Run a script's main, expect exit code 2 and one 'error:' line on stderr; return it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---- the model ------------------------------------------------------------------------------

def test_only_layer4_and_new_fc_train_8398858_of_11181642_parameters():
    model = resnet.prepare_for_transfer(resnet.load_resnet18("none"))
    trainable = count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    assert trainable == 8_393_728 + 5_130 == 8_398_858  # layer4 + fc (512 x 10 + 10)
    assert frozen == 2_782_784                           # conv1, bn1, layer1-3
    assert trainable + frozen == 11_181_642
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"layer4", "fc"}
    # report 4.a: "the last five convolutional layers" are layer4's convolutions
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.layer4.modules()) == 5


@pytest.mark.parametrize("size, conv1_side, layer4_side", [(224, 112, 7), (64, 32, 2)])
def test_output_shapes(size, conv1_side, layer4_side):
    model = resnet.prepare_for_transfer(resnet.load_resnet18("none")).eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 10)
    acts = task4bc.activations(model, torch.rand(3, size, size))
    assert acts["conv1"].shape == (64, conv1_side, conv1_side)
    assert acts["layer4"].shape == (512, layer4_side, layer4_side)


# ---- where the weights come from ------------------------------------------------------------

def test_weights_file_loads_exactly(random_state_file):
    saved = torch.load(random_state_file, weights_only=True)
    model = resnet.load_resnet18(str(random_state_file))
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"),
    ("truncated", "cannot be read ("),
    ("garbage", "cannot be read ("),
    ("other_dict", "is not a resnet18 state_dict"),
    ("tensor", "is not a resnet18 state_dict"),
])
def test_bad_weights_file_is_one_error_line_exit_2(kind, message, random_state_file, tmp_path,
                                                   capsys):
    path = tmp_path / f"{kind}.pth"
    if kind == "truncated":
        path.write_bytes(random_state_file.read_bytes()[:100_000])
    elif kind == "garbage":
        path.write_bytes(b"not a torch file\n" * 50)
    elif kind == "other_dict":
        torch.save({"weight": torch.zeros(3)}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    err = exit_error(capsys, task4a.main, ["--weights", str(path)])
    assert message in err and str(path) in err


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty torchvision cache and a download that fails as it does without a network;
    returns where torchvision would keep the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


@pytest.mark.parametrize("script", [task4a, task4bc])
def test_imagenet_weights_offline_and_not_cached_exit_2_saying_how_to_provide_them(
        script, offline, fake_image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--output-dir", str(out)]
    if script is task4a:
        argv += ["--data-dir", str(fake_image_folder), "--quick", "--image-size", "32"]
    err = exit_error(capsys, script.main, argv)
    assert "not in torchvision's cache" in err and "Name or service not known" in err
    assert "the path of a resnet18 state_dict" in err and str(offline) in err
    assert not out.exists() or not any(out.rglob("*.png"))  # no silent fall-back to random weights


def test_imagenet_weights_come_from_torchvisions_cache_without_network(offline, random_state_file):
    offline.parent.mkdir(parents=True)
    offline.write_bytes(random_state_file.read_bytes())
    model = resnet.load_resnet18("imagenet")
    saved = torch.load(random_state_file, weights_only=True)
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])


def test_unreadable_cached_imagenet_weights_exit_2_saying_delete(offline, capsys):
    offline.parent.mkdir(parents=True)
    offline.write_bytes(b"half a download")
    err = exit_error(capsys, task4bc.main, ["--output-dir", str(offline.parent / "figs")])
    assert str(offline) in err and "delete the file" in err


# ---- task4a.py ------------------------------------------------------------------------------

@pytest.mark.slow
def test_task4a_random_weights_end_to_end_says_random_everywhere(fake_image_folder, tmp_path,
                                                                 capsys, monkeypatch):
    titles = []
    original = plotting.plot_run
    monkeypatch.setattr(plotting, "plot_run", lambda history, path, title:
                        titles.append(title) or original(history, path, title))
    task4a.main(["--weights", "none", "--quick", "--image-size", "32", "--device", "cpu",
                 "--data-dir", str(fake_image_folder), "--output-dir", str(tmp_path),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert "8,398,858 trainable parameters (layer4 + fc), 2,782,784 frozen" in out
    assert "Table 4.a, ResNet18 with random weights, no pretraining" in out
    for row in ("Training", "Validation", "Test"):
        assert f"\n{row} " in out
    run = tmp_path / "resnet18_random_init"
    metrics = json.loads((run / "metrics.json").read_text())
    recipe = metrics["config"]["recipe"]
    assert metrics["config"]["model_kwargs"] == {"weights": "none"}
    assert metrics["weights"] == "random weights, no pretraining"
    assert (recipe["lr"], recipe["batch_size"], recipe["image_size"]) == (5e-4, 32, 32)
    assert metrics["trainable_parameters"] == 8_398_858
    assert metrics["epochs_completed"] == 1.0
    figure = tmp_path / "task4a_figure6_resnet18_random_init.png"
    assert Image.open(figure).size[0] > 500
    assert len(titles) == 1 and "random weights" in titles[0]


def test_task4a_image_size_below_32_is_refused(capsys):
    err = exit_error(capsys, task4a.main, ["--weights", "none", "--image-size", "16"])
    assert "--image-size 16: must be at least 32" in err


# ---- task4bc.py -----------------------------------------------------------------------------

@pytest.mark.slow
def test_task4bc_writes_both_figures_with_a_weights_file(random_state_file, photo, tmp_path,
                                                         capsys):
    out = tmp_path / "figs"
    task4bc.main(["--image", str(photo), "--weights", str(random_state_file), "--output-dir",
                  str(out), "--indices", "0", "63"])
    assert capsys.readouterr().out.count("wrote ") == 2
    fig7 = Image.open(out / "task4b_figure7_filters.png")
    fig8 = Image.open(out / "task4c_figure8_layer4.png")
    assert fig8.size[0] > fig7.size[0]  # 10 channels wide against 2 filters


def test_task4bc_random_weights_default_to_outputs_never_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    task4bc.main(["--weights", "none"])  # no --image: matplotlib's sample photograph
    assert sorted(p.name for p in (tmp_path / "outputs" / "task4bc").iterdir()) == [
        "task4b_figure7_filters.png", "task4c_figure8_layer4.png"]
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_task4bc_bad_indices_exit_2_from_the_command_line():
    result = subprocess.run([sys.executable, "task4bc.py", "--weights", "none", "--indices", "14",
                             "64", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == "error: --indices 64 -1: the first layer has filters 0-63 only\n"


@pytest.mark.parametrize("kind", ["missing", "folder", "text"])
def test_task4bc_unreadable_image_exit_2(kind, tmp_path, capsys):
    path = tmp_path / "image.jpg"
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not an image")
    err = exit_error(capsys, task4bc.main, ["--image", str(path), "--weights", "none"])
    assert f"--image {path}: cannot be read as an image" in err

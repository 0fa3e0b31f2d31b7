"""common.api with a network of the caller's own: api.train(model=...) trains it by the scripts'
path with a script's recipe under a new run name, the record says it is the caller's module,
api.load(run_dir, model=...) gives it back (names and shapes checked), and TrainedRun.predict
takes file paths and an empty list as well as tensors and PIL images."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from common import api
from common.config import CUSTOM_MODEL
from common.data import CIFAR_NORMALIZATION
from common.errors import UserError
from common.files import FolderLock
from common.recipes import MODEL1
from conftest import losses, metrics

RUN_FILES = {"config.json", "metrics.json", "history.csv", "steps.csv", "confusion.csv",
             "confusion.png", "best.pt", "checkpoint.pt"}


class PoolNet(nn.Module):
    """A caller's network the package does not know: any nn.Module of (N, 3, 32, 32) -> (N, 10)."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))


def tiny(data, out, **more) -> dict:
    """api.train's settings for a run of 5 steps (100 images, batch 20, one epoch)."""
    return dict(data_dir=data, subset=100, epochs=1, batch_size=20, precision="fp32",
                output_dir=out) | more


@pytest.fixture(scope="module")
def test_images(fake_arrays) -> torch.Tensor:
    return torch.from_numpy(fake_arrays[1][0]).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- training a module of your own

def test_your_module_trains_with_the_recipe_named_records_custom_and_loads_into_a_new_instance(
        fake_image_folder, tmp_path, test_images):
    torch.manual_seed(0)
    net = PoolNet()
    before = net.conv.weight.detach().clone()
    trained = api.train("task3", "poolnet", model=net, recipe="model1",
                        **tiny(fake_image_folder, tmp_path))
    run_dir = tmp_path / "poolnet"
    assert trained.run_dir == run_dir and RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert trained.model is net and not net.training  # trained in place, as fit(model) does
    assert not torch.equal(net.conv.weight.detach().cpu(), before)
    assert len(losses(run_dir)) == 5  # the Trainer's own steps.csv: 100 images / batch 20
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["model"] == CUSTOM_MODEL == "custom" and recorded["model_kwargs"] == {}
    assert recorded["model_class"].endswith("test_api_own_module.PoolNet")
    # model 1's recipe, as named, with the settings given on top of it
    assert recorded["recipe"]["opt"] == MODEL1.opt == "adamw"
    assert recorded["recipe"]["lr"] == MODEL1.lr and recorded["recipe"]["batch_size"] == 20
    written = metrics(run_dir)
    assert written["command"].startswith("api.train('task3', 'poolnet', model=<PoolNet>, ")
    assert trained.metrics["final"] == written["final"] and FolderLock.held == set()

    loaded = api.load(run_dir, model=PoolNet())
    assert isinstance(loaded.model, PoolNet) and not loaded.model.training
    assert torch.equal(loaded.predict(test_images), trained.predict(test_images))
    labels = torch.arange(10).repeat_interleave(10)  # the run's test split, as metrics.json says
    correct = (loaded.predict(test_images).argmax(1) == labels).sum().item()
    assert correct == round(100 * written["final"]["test"]["accuracy"])

    with pytest.raises(UserError, match=r"conv\.weight is \(6, 3, 3, 3\) in the checkpoint, "
                                        r"\(4, 3, 3, 3\) in the model") as wrong:
        api.load(run_dir, model=PoolNet(width=4))
    assert "\n" not in str(wrong.value)
    with pytest.raises(UserError, match=r"is a run of a module of your own \(.*PoolNet\); load it "
                                        r"into one from Python: api\.load\(run_dir, model="):
        api.load(run_dir)  # predict.py's way: nothing to rebuild it from


def test_a_task_with_one_recipe_needs_no_recipe_named(fake_image_folder, tmp_path):
    trained = api.train("task2", "poolnet", model=PoolNet(), **tiny(fake_image_folder, tmp_path))
    assert trained.config.model == "custom" and trained.config.recipe.opt == "sgd"  # CNN1G's
    assert trained.config.recipe.lr == 5e-2


@pytest.mark.parametrize("call, message", [
    (dict(task="task2", run="cnn1g"), "run 'cnn1g' is task2's own run of cnn1g; give your "
                                      "module's run a name of its own"),
    (dict(task="task2", run="../elsewhere"), "run '../elsewhere' is not a folder name"),
    (dict(task="task3", run="mine"), "task3's runs train with 2 recipes; name the one for your "
                                     "module with recipe= (one of model1, model2)"),
    (dict(task="task3e", run="mine", recipe="speedrun"), "recipe='speedrun': name a run of "
                                                         "task3e whose recipe a module can"),
    (dict(task="task9", run="mine"), "no script 'task9'; choose from task2, "),
    (dict(task="task2", run="mine", frobnicate=1), "unknown setting(s) frobnicate"),
])
def test_your_module_is_refused_a_scripts_run_name_and_a_recipe_it_cannot_take(
        call, message, tmp_path):
    with pytest.raises(UserError) as info:
        api.train(**call, model=PoolNet(), output_dir=tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_recipe_without_a_module_and_a_module_that_is_not_one_are_refused(tmp_path):
    with pytest.raises(UserError, match="recipe= chooses the recipe of a module of your own"):
        api.train("task3", "model1", recipe="model2", output_dir=tmp_path)
    with pytest.raises(TypeError, match="model is a torch.nn.Module, not str"):
        api.train("task2", "mine", model="PoolNet", output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- predict's inputs

def a_run(network: nn.Module) -> api.TrainedRun:
    """A TrainedRun around a network (predict needs the network and the preprocessing)."""
    return api.TrainedRun(network.eval(), api.Preprocess(CIFAR_NORMALIZATION, 32), None, {},
                          None)


def test_predict_takes_file_paths_alone_or_in_a_list_as_the_pixels_they_hold(
        tmp_path, test_images):
    torch.manual_seed(0)
    run = a_run(PoolNet())
    paths = []
    for i, image in enumerate(test_images[:3]):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    # the batch the network takes, pixel for pixel; its probabilities alike (a list is
    # stacked after preprocessing, a tensor before: the sums' order may differ in the last bit)
    batch = run.preprocess(test_images[:3])
    for given in ([str(p) for p in paths], paths, [paths[0], test_images[1],
                                                   Image.open(paths[2])]):
        assert torch.equal(run.preprocess(given), batch)
        assert torch.allclose(run.predict(given), run.predict(test_images[:3]), atol=1e-6)
    assert torch.equal(run.preprocess(str(paths[1])), batch[1:2])  # one path, str or Path
    assert torch.equal(run.preprocess(paths[2]), batch[2:])
    assert run.predict(paths[2]).shape == (1, 10)
    with pytest.raises(UserError, match=f"cannot read image {tmp_path / 'nowhere.png'}: "):
        run.predict([paths[0], tmp_path / "nowhere.png"])


def test_predict_of_no_image_is_an_empty_0_by_10_tensor():
    class NoEmptyBatch(PoolNet):  # a network that cannot take an empty batch is not asked to
        def forward(self, x):
            assert len(x), "called with an empty batch"
            return super().forward(x)

    out = a_run(NoEmptyBatch()).predict([])
    assert out.shape == (0, 10) and out.dtype == torch.float32
    assert a_run(NoEmptyBatch()).predict(()).shape == (0, 10)


def test_a_folder_that_is_not_a_run_is_refused_without_suggesting_the_path_refused(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's old next step: a run the main job did not write
    with pytest.raises(UserError) as info:
        api.load("outputs/task2/cnn1g")
    # what it says instead of a path to give: the finished runs it found (here none)
    assert str(info.value) == (
        "outputs/task2/cnn1g is not a finished run's folder (no config.json, best.pt, "
        "metrics.json); no finished run is under outputs/task2/cnn1g/ or outputs/: train one "
        "first (e.g. python task2.py)")

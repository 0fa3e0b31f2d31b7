"""--tensorboard's mechanism: a Trainer given tensorboard_writer's scalars writes every step's
training loss and each check's losses, accuracies and rate, read back by TensorBoard's own
reader; the writer is flushed and closed when the block ends, also when training fails."""
import threading
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.data import TensorLoader
from common.trainer import Trainer, tensorboard_writer
from conftest import trainer_config
from test_trainer import tiny_loaders, tiny_model



def writer_threads() -> list[threading.Thread]:
    """The threads of SummaryWriters not closed: each writes its events file in the background
    and lives until close() (tensorboard's _AsyncWriterThread)."""
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"]


def scalars_of(folder: Path) -> dict[str, list]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every one
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_a_trainer_writes_one_step_loss_per_step_and_each_splits_curves_per_check(tmp_path):
    train, val = tiny_loaders()  # 64 images in batches of 16: 4 steps an epoch
    g = torch.Generator().manual_seed(1)
    test = TensorLoader(torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.arange(30) % 10, 30, device="cpu", train=False)
    model = tiny_model()
    with tensorboard_writer(tmp_path) as scalars:
        assert len(writer_threads()) == 1
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05),
                          {"train": train, "val": val, "test": test},
                          trainer_config(epochs=3, checks_per_epoch=2, patience=None),
                          scalars=scalars)
        trainer.fit()
    assert writer_threads() == []

    found = scalars_of(tmp_path / "tensorboard")
    checks = trainer.history["checks"]
    assert len(trainer.history["step_loss"]) == 12 and len(checks) == 6
    assert sorted(found) == sorted(["train/step_loss", "train/loss", "train/accuracy", "val/loss",
                                    "val/accuracy", "test/loss", "test/accuracy", "lr"])
    steps = found["train/step_loss"]
    assert [e.step for e in steps] == list(range(1, 13))
    assert [e.value for e in steps] == pytest.approx(trainer.history["step_loss"], rel=1e-6)
    for tag, key in (("val/loss", "val_loss"), ("test/accuracy", "test_accuracy"),
                     ("train/loss", "train_loss")):
        assert [e.step for e in found[tag]] == [2, 4, 6, 8, 10, 12]
        assert [e.value for e in found[tag]] == pytest.approx([c[key] for c in checks], rel=1e-6)


def test_a_run_without_a_test_set_has_no_test_curves_and_a_failing_run_closes_its_file(tmp_path):
    train, val = tiny_loaders()
    model = tiny_model()
    with pytest.raises(RuntimeError, match="stop here"):
        with tensorboard_writer(tmp_path) as scalars:
            trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05),
                              {"train": train, "val": val},
                              trainer_config(epochs=1, checks_per_epoch=1), scalars=scalars)
            trainer.fit()
            raise RuntimeError("stop here")
    assert writer_threads() == []
    found = scalars_of(tmp_path / "tensorboard")
    assert not any(tag.startswith("test/") for tag in found)
    assert [len(found[t]) for t in ("train/step_loss", "val/loss")] == [4, 1]


def test_tensorboard_option_writes_the_runs_curves_into_its_folder(fake_image_folder, tmp_path,
                                                                   capsys):
    from conftest import args, load_script, run
    code, err = run(load_script("task2"), args(fake_image_folder, tmp_path, "--precision", "fp32",
                                               "--tensorboard"), capsys)
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "cnn1g" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("train/step_loss")) == 5  # 100 images, batch 20
    assert len(events.Scalars("val/accuracy")) == 2     # two checks an epoch

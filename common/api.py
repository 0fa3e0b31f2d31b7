"""The package from Python (a notebook, another program): train() trains any script's run by
name through the scripts' own path and returns it; load() reads a finished run folder back as
its model, in eval mode, with the preprocessing its images had; export_onnx() writes it for
runtimes outside Python. predict.py is the command line over this module."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .config import CONFIG_NAME, SPEEDRUN_MODEL, RunConfig, load_config
from . import data
from .data import CLASSES, SPEEDRUN_NORMALIZATION, decoded_rgb, normalize
from .errors import UserError, forget_kept, raise_kept
from .files import BEST_NAME, METRICS_NAME, FolderLock, RunDir, load_torch, save_bytes
from .recipes import PLANS, SpeedrunConfig
from .run import MODELS, QUICK_SUBSET, build_model, setup, train_speedrun
from .run import train as train_run
from .trainer import weights_problem

# train()'s own settings, beside the run's (the recipe's fields, seed, subset, precision, device)
CALL_SETTINGS = ("output_dir", "config", "resume", "progress", "quick", "tensorboard")
RUN_SETTINGS = ("seed", "subset", "precision", "device")
ONNX_OPSET = 18  # the dynamo exporter's own default; onnxruntime 1.17 and later run it


# ---------------------------------------------------------------- a run's preprocessing

@dataclass(frozen=True)
class Preprocess:
    """A run's preprocessing of new images, the steps its test images took: pixels scaled to
    [0, 1], the whole image resized to image_size x image_size, normalised with the run's mean
    and std. The resize (our choice) is bilinear, antialiased when it shrinks, so that a large
    photo becomes what a smaller copy of it would be; the aspect ratio is not kept and nothing
    is cropped (CIFAR-10's images are whole scenes). An image already the run's size is not
    resized; a 32x32 image for a 224-pixel run is enlarged as the run's own images were."""
    normalization: tuple
    image_size: int

    def __call__(self, images) -> torch.Tensor:
        """uint8 (0-255) or float ([0, 1]) tensors (N, 3, H, W) or (3, H, W), a PIL image or a
        list of either -> the float (N, 3, S, S) batch the model takes."""
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)):  # each its own size, resized before stacking
            return torch.cat([self(pixels(im) if isinstance(im, Image.Image) else im)
                              for im in images])
        x = unit_range(images)
        size = (self.image_size, self.image_size)
        if tuple(x.shape[-2:]) != size:
            shrinks = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=shrinks)
        return normalize(x, self.normalization)  # channels_last, as the Trainer's model


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] from uint8 or [0, 1] float images, (N, 3, H, W) or
    (3, H, W); anything else is the caller's bug and raises."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images are a tensor, a PIL image or a list of them, not "
                        f"{type(images).__name__}")
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"images are (N, 3, H, W) or (3, H, W), not {tuple(images.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255)  # as the run's loader scales its uint8 images
    if not x.is_floating_point():
        raise TypeError(f"images are uint8 or float, not {x.dtype}")
    if x.numel() and not (0 <= float(x.min()) and float(x.max()) <= 1):
        raise ValueError(f"float images hold values in [0, 1], these go from "
                         f"{float(x.min()):g} to {float(x.max()):g}")
    return x.float()


def pixels(image: Image.Image, name="the image") -> torch.Tensor:
    """A PIL image as (3, H, W) uint8, decoded as the data's images are (common.data: 16-bit
    greyscale scaled to 8 bits, not clipped)."""
    return torch.from_numpy(decoded_rgb(image, name).copy()).permute(2, 0, 1)


def read_image(path) -> torch.Tensor:
    """An image file of any size and mode as (3, H, W) uint8, decoded as the data's images are;
    a file that cannot be read as one is one UserError line."""
    return data.read_image(path, size=None)


def preprocessing(config: RunConfig) -> Preprocess:
    recipe = config.recipe
    if isinstance(recipe, SpeedrunConfig):  # scored at 32 pixels, whatever it trained at first
        return Preprocess(SPEEDRUN_NORMALIZATION, 32)
    return Preprocess(recipe.normalization, recipe.image_size)


# ---------------------------------------------------------------- a trained run

@dataclass
class TrainedRun:
    """A run's network (eval mode) with what it needs to classify images: its preprocessing,
    the class names, its configuration (config.json), its metrics (metrics.json, with the
    history) and its folder. The speed-run's network is its plain forward pass: the accuracy
    its metrics give "with TTA" averages flipped and shifted views (common.speedrun.predict)."""
    model: torch.nn.Module
    preprocess: Preprocess
    config: RunConfig
    metrics: dict
    run_dir: Path
    classes: tuple = CLASSES

    @torch.no_grad()
    def predict(self, images) -> torch.Tensor:
        """Class probabilities (N, 10), on the CPU, of images in any form Preprocess takes."""
        device = next(self.model.parameters()).device
        logits = self.model(self.preprocess(images).to(device))
        return F.softmax(logits.float(), dim=1).cpu()


def load(run_dir, device="cpu") -> TrainedRun:
    """A finished run folder (config.json, best.pt, metrics.json) as its model with the best
    check's weights, in eval mode on `device`. The network is rebuilt from config.json without
    downloading anything (ResNet18's starting weights are replaced by the run's); a folder that
    is not a finished run, or whose files are damaged, is one UserError line."""
    run_dir = Path(run_dir)
    missing = [n for n in (CONFIG_NAME, BEST_NAME, METRICS_NAME) if not (run_dir / n).is_file()]
    if missing:
        raise UserError(f"{run_dir} is not a finished run's folder (no {', '.join(missing)}); "
                        "give one such as outputs/task2/cnn1g", value=run_dir)
    config = load_config(run_dir / CONFIG_NAME)
    if config.model not in MODELS and config.model != SPEEDRUN_MODEL:
        raise UserError(f"{run_dir}: model {config.model!r} is not one this package builds "
                        f"({', '.join(MODELS)}); register it in common.run.MODELS first "
                        "(docs/extending.md)", value=run_dir)
    metrics = RunDir(run_dir).load_finished()
    state = load_torch(run_dir / BEST_NAME, weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays where it was
        model = build_model(_without_downloads(config))
    weights = state.get("model") if isinstance(state, dict) else None
    problem = "no model weights" if not isinstance(weights, dict) else \
        weights_problem(model, weights)
    if problem:
        raise UserError(f"{run_dir / BEST_NAME} does not fit the run's model ({problem})",
                        value=run_dir)
    model.load_state_dict(weights)
    # channels_last, as the Trainer and the speed-run hold it: the same sums in the same order,
    # so the run's own test images score exactly as its metrics say
    model = model.to(device, memory_format=torch.channels_last).eval()
    return TrainedRun(model, preprocessing(config), config, metrics, run_dir)


def _without_downloads(config: RunConfig) -> RunConfig:
    """The run's network built from random weights: best.pt replaces every one of them."""
    if "weights" not in config.model_kwargs:
        return config
    return dataclasses.replace(config, model_kwargs={**config.model_kwargs, "weights": "none"})


# ---------------------------------------------------------------- training

def plan(task: str, run: str) -> tuple:
    """(model, recipe, model_kwargs) of script `task`'s run `run` (common.recipes.PLANS)."""
    if task not in PLANS:
        raise UserError(f"no script {task!r}; choose from {', '.join(PLANS)}")
    if run not in PLANS[task]:
        raise UserError(f"{task} has no run {run!r}; choose from {', '.join(PLANS[task])}")
    return PLANS[task][run]


def train(task: str, run: str, data_dir=None, **settings) -> TrainedRun:
    """Train script `task`'s run `run` as `python TASK.py` trains it (common.run.setup and
    train, or the speed-run's seeds), with settings named as the command line's options:
    subset=, epochs=, batch_size=, lr=, opt=, momentum=, weight_decay=, lr_scheduler=,
    label_smoothing=, patience= (0: off), seed=, precision=, device=, any other field of the
    run's recipe (image_size=, ...), and output_dir= (default outputs/TASK), quick=True (1,000
    images per split, one epoch), progress=True, tensorboard=True, config= (a run's
    config.json), resume= (a checkpoint). Writes the usual run folder and returns the run with its trained model in
    eval mode; like the scripts, it trains again from the start when called again (the
    speed-run loads a seed finished earlier with the same settings, as task3e.py does). The
    output folder is locked while this trains (another process writing there is refused) and
    released when it returns or raises, so it can be called again."""
    model, recipe, model_kwargs = plan(task, run)
    run_settings, call = _split_settings(task, run, recipe, settings)
    speedrun = model == SPEEDRUN_MODEL
    if data_dir is not None:  # config.json records it as text, as the command line's
        data_dir = str(Path(data_dir).expanduser())
    locks_before = set(FolderLock.held)
    try:
        session = setup(task, [(run, model, recipe, model_kwargs)],
                        settings={"data_dir": data_dir, **run_settings},
                        config_file=call.get("config"), output_dir=call.get("output_dir"),
                        resume=call.get("resume"), progress=bool(call.get("progress")),
                        tensorboard=bool(call.get("tensorboard")),
                        command=_call_text(task, run, data_dir, settings),
                        figures_to_plots=False, data_seed=0 if speedrun else None)
        if speedrun:  # its own loop, one seed: the run's
            seed = session.configs[run].seed
            train_speedrun(session, run, [seed])
            return load(session.output_root / run / f"seed{seed}")
        result = train_run(session, run)
        raise_kept()  # a signal in the last check: the run is written, the call stops
    except UserError as err:
        raise _in_python_words(err) from None
    finally:
        forget_kept()
        for lock in FolderLock.held - locks_before:
            lock.release()
    if "model" not in result:  # run.train's word for a run loaded, not trained
        return load(session.output_root / run)
    metrics = {k: v for k, v in result.items() if k != "model"}
    return TrainedRun(result["model"].eval(), preprocessing(session.configs[run]),
                      session.configs[run], metrics, session.output_root / run)


def _split_settings(task: str, run: str, recipe, settings: dict) -> tuple[dict, dict]:
    """(the run's settings, train()'s own); a name that is neither is a UserError naming it.
    quick=True fills in subset and epochs where they are not given, as --quick does."""
    allowed = {f.name for f in dataclasses.fields(recipe)} | set(RUN_SETTINGS) | \
        set(CALL_SETTINGS)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise UserError(f"{task} {run}: unknown setting(s) {', '.join(unknown)}; the settings "
                        f"are {', '.join(sorted(allowed))}")
    call = {k: v for k, v in settings.items() if k in CALL_SETTINGS}
    run_settings = {k: v for k, v in settings.items() if k not in CALL_SETTINGS}
    if call.get("quick"):
        for name, value in (("subset", QUICK_SUBSET), ("epochs", 1)):
            if run_settings.get(name) is None:
                run_settings[name] = value
    return run_settings, call


def _call_text(task: str, run: str, data_dir, settings: dict) -> str:
    """The call as typed, for metrics.json's "command"."""
    given = ({"data_dir": data_dir} if data_dir is not None else {}) | settings
    return f"api.train({task!r}, {run!r}" + "".join(
        f", {k}={(str(v) if isinstance(v, Path) else v)!r}" for k, v in given.items()) + ")"


def _in_python_words(err: UserError) -> UserError:
    """The library's UserError with the setting it concerns named as train() takes it
    (subset=0: must be at least 1), where its message does not say it already."""
    if err.setting is None or err.value is None or str(err.value) in err.message:
        return err
    return UserError(f"{err.setting}={err.value!r}: {err.message}", setting=err.setting,
                     value=err.value)


# ---------------------------------------------------------------- ONNX

def export_onnx(trained: TrainedRun, path) -> Path:
    """The run's network as an ONNX file, checked with onnx.checker: input "images", the
    preprocessed float32 batch (N, 3, S, S) with N free; output "logits" (N, 10). The file's
    metadata holds the preprocessing (image size, mean, std) and the class names.

    torch's dynamo exporter (torch.onnx.export(dynamo=True), built on torch.export and
    onnxscript): torch's default since 2.9, it exports every network here offline; the legacy
    TorchScript exporter still works but warns that it will be removed."""
    import onnx  # only here: training needs none of ONNX
    model = copy.deepcopy(trained.model).cpu().float().eval()  # the caller's stays where it is
    size = trained.preprocess.image_size
    example = torch.zeros(2, 3, size, size)  # 2, not 1: a batch of 1 would be fixed to 1
    program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                opset_version=ONNX_OPSET, input_names=["images"],
                                output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    mean, std = trained.preprocess.normalization
    onnx.helper.set_model_props(proto, {
        "image_size": str(size), "mean": ",".join(map(str, mean)),
        "std": ",".join(map(str, std)), "classes": ",".join(trained.classes),
        "preprocessing": "RGB scaled to [0, 1], resized to image_size (bilinear), "
                         "(x - mean) / std per channel",
        "run": f"{trained.config.task} {trained.config.run}"})
    onnx.checker.check_model(proto, full_check=True)
    return save_bytes(proto.SerializeToString(), path)

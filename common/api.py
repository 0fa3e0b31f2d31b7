"""The package from Python (a notebook, another program): train() trains any script's run by
name, or a module of the caller's own with a script's recipe, through the scripts' own path
and returns it; load() reads a finished run folder back as its model, in eval mode, with the
preprocessing its images had; score() scores it on a test split as the run scored itself;
export_onnx() writes it for runtimes outside Python. predict.py
is the command line over this module."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from . import data, system, trainer
from .config import (CONFIG_NAME, CUSTOM_MODEL, SPEEDRUN_MODEL, RunConfig, load_config,
                     load_finished)
from .data import CLASSES, SPEEDRUN_NORMALIZATION, decoded_rgb, normalize
from .errors import UserError, forget_kept, raise_kept, require_extra
from .files import (BEST_NAME, METRICS_NAME, FolderLock, RunDir, load_torch, output_file,
                    save_bytes)
from .recipes import PLANS, QUICK_SUBSET, SpeedrunConfig
from .models import weights_problem
from .run import MODELS, build_model, scoring_loader, setup, train_run, train_seeds
from .speedrun import DATA_SEED as SPEEDRUN_DATA_SEED
from .speedrun import predict as tta_logits
from .speedrun import scoring_batches
from .trainer import empty_confusion

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
        """uint8 (0-255) or float ([0, 1]) tensors (N, 3, H, W) or (3, H, W), a PIL image, an
        image file's path (str or Path) or a list of any of them -> the float (N, 3, S, S)
        batch the model takes; an empty list is an empty batch (0, 3, S, S). Anything else is
        the caller's bug and raises."""
        size = (self.image_size, self.image_size)
        if isinstance(images, (Image.Image, str, os.PathLike)):
            images = [images]
        if isinstance(images, (list, tuple)):  # each its own size, resized before stacking
            # torch.cat refuses an empty list: no image is an empty batch
            return torch.cat([self(as_tensor(im)) for im in images]) if images else \
                torch.empty(0, 3, *size)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images are a tensor, a PIL image, a file's path or a list of them, "
                            f"not {type(images).__name__}")
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images are (N, 3, H, W) or (3, H, W), not {tuple(images.shape)}")
        if x.dtype == torch.uint8:
            x = x.float().div_(255)  # as the run's loader scales its uint8 images
        elif not x.is_floating_point():
            raise TypeError(f"images are uint8 or float, not {x.dtype}")
        elif x.numel() and not (0 <= float(x.min()) and float(x.max()) <= 1):
            raise ValueError(f"float images hold values in [0, 1], these go from "
                             f"{float(x.min()):g} to {float(x.max()):g}")
        x = x.float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-2] > size[0] or x.shape[-1] > size[1])
        return normalize(x, self.normalization)  # channels_last, as the Trainer's model


def as_tensor(image):
    """One image of a list: a PIL image or a file's path as its (3, H, W) uint8 pixels, decoded
    as the data's images are (common.data), a tensor as it is (Preprocess checks it)."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(decoded_rgb(image, "the image").copy()).permute(2, 0, 1)
    if isinstance(image, (str, os.PathLike)):
        return data.read_image(image, size=None)  # the one reader, at the file's size
    return image


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
        """Class probabilities (N, 10), on the CPU, of images in any form Preprocess takes:
        tensors, PIL images, file paths (read as predict.py reads them) or a list of them. No
        image (an empty list) gives an empty (0, 10) tensor, as an empty batch would."""
        batch = self.preprocess(images)
        if len(batch) == 0:  # not every network takes an empty batch: none is asked to
            return torch.empty(0, len(self.classes))
        logits = self.model(batch.to(next(self.model.parameters()).device))
        return F.softmax(logits.float(), dim=1).cpu()


LOADED_FILES = (CONFIG_NAME, BEST_NAME, METRICS_NAME)  # what load() reads
SEARCHED = ("outputs",)  # where the scripts write by default
SEARCH_FOLDERS = 2000    # at most this many folders looked at: a --run of / stays quick


def load(run_dir, device="cpu", model: torch.nn.Module | None = None) -> TrainedRun:
    """A finished run folder (config.json, best.pt, metrics.json) as its model with the best
    check's weights, in eval mode on `device`. The network is rebuilt from config.json without
    downloading anything (ResNet18's starting weights are replaced by the run's), or, given
    `model` (a run of a module of your own: api.train(model=...)), the weights go into that
    module, whose names and shapes must be the run's. A folder that is not a finished run,
    whose files are damaged, or whose weights do not fit, is one UserError line."""
    run_dir = Path(run_dir)
    missing = [n for n in LOADED_FILES if not (run_dir / n).is_file()]
    if missing:  # what to give instead: the finished runs below it or in outputs/
        roots = list(dict.fromkeys([run_dir, *map(Path, SEARCHED)]))
        runs, shown = finished_runs(*roots), 5
        more = f" and {len(runs) - shown} more" if len(runs) > shown else ""
        instead = (f"finished runs: {', '.join(map(str, runs[:shown]))}{more}" if runs else
                   f"no finished run is under {' or '.join(f'{r}/' for r in roots)}: train one "
                   "first (e.g. python task2.py)")
        raise UserError(f"{run_dir} is not a finished run's folder (no {', '.join(missing)}); "
                        + instead, value=run_dir)
    config = load_config(run_dir / CONFIG_NAME)
    if model is not None:
        model = _own_module(model)
    elif config.model == CUSTOM_MODEL:
        raise UserError(f"{run_dir} is a run of a module of your own ({config.model_class}); "
                        "load it into one from Python: api.load(run_dir, model=YourModule(...))",
                        value=run_dir)
    elif config.model not in MODELS and config.model != SPEEDRUN_MODEL:
        raise UserError(f"{run_dir}: model {config.model!r} is not one this package builds "
                        f"({', '.join(MODELS)}); register it in common.run.MODELS first "
                        "(docs/extending.md)", value=run_dir)
    else:  # from random weights (nothing downloaded): best.pt replaces every one of them
        kwargs = config.model_kwargs | ({"weights": "none"} if "weights" in config.model_kwargs
                                        else {})
        with torch.random.fork_rng(devices=[]):  # the caller's random stream stays where it was
            model = build_model(dataclasses.replace(config, model_kwargs=kwargs))
    metrics = load_finished(RunDir(run_dir))
    state = load_torch(run_dir / BEST_NAME, weights_only=True)
    weights = state.get("model") if isinstance(state, dict) else None
    problem = "no model weights" if not isinstance(weights, dict) else \
        weights_problem(model, weights)
    if problem:
        raise UserError(f"{run_dir / BEST_NAME} does not fit the "
                        f"{'run' if config.model != CUSTOM_MODEL else 'given'} model ({problem})",
                        value=run_dir)
    model.load_state_dict(weights)
    # channels_last, as the Trainer and the speed-run hold it: the same sums in the same order,
    # so the run's own test images score exactly as its metrics say
    model = model.to(device, memory_format=torch.channels_last).eval()
    return TrainedRun(model, preprocessing(config), config, metrics, run_dir)


def finished_runs(*roots, depth: int = 3) -> list[Path]:
    """Run folders load() reads (config.json, best.pt, metrics.json) at most `depth` folders
    below each root (outputs/task3/model1, outputs/task3e/speedrun/seed0), in name order;
    links to folders are not followed."""
    found, looked = [], 0
    for root in map(Path, roots):
        stack = [(root, 0)] if root.is_dir() else []
        while stack and looked < SEARCH_FOLDERS:
            folder, level = stack.pop()
            looked += 1
            if all((folder / n).is_file() for n in LOADED_FILES):
                found.append(folder)
            try:
                below = [p for p in folder.iterdir() if not p.name.startswith(".")
                         and p.is_dir() and not p.is_symlink()] if level < depth else []
            except OSError:  # a folder we may not list: nothing found there
                continue
            stack += [(p, level + 1) for p in sorted(below, reverse=True)]
    return sorted(dict.fromkeys(found))


def _own_module(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model is a torch.nn.Module, not {type(model).__name__}")
    return model


# ---------------------------------------------------------------- scoring a test split

@dataclass
class Evaluation:
    """A run's network scored on a test split as the run scored itself. scores: {"test":
    {"loss", "accuracy"}}, and the speed-run's "test_tta" (with test-time augmentation at its
    tta_level); confusion: [true, predicted] counts of the last of them (the speed-run's with
    TTA, as its confusion.csv); recorded: metrics.json's "final" entries of the same names;
    own_data: whether the images are the run's by content (config.json's data_digest; None
    where the run recorded none)."""
    scores: dict
    confusion: torch.Tensor
    recorded: dict
    data: str       # the source read, as metrics.json's data_source says it
    images: int     # in the test split
    own_data: bool | None
    precision: str
    device: str


def score(trained: TrainedRun, data_dir=None, progress: bool = False) -> Evaluation:
    """The run's network on a test split: the run's own data, subset and split (config.json's
    data_dir, subset and seed, read by common.data.cifar10_splits as training read them), or
    the CIFAR-10 folder `data_dir` with the run's subset and split. Scored as the run scored
    itself: common.trainer.evaluate over the run's test loader (the speed-run's scoring
    batches, and its test-time augmentation), in the precision metrics.json records, on the
    kind of device it trained on where this machine has one, else the CPU (the model moves
    there; the CPU computes the same, up to the last digits). On the run's own data and device
    the scores are metrics.json's exactly. Nothing is downloaded: a folder without CIFAR-10 is
    one UserError line."""
    config = trained.config
    speedrun = isinstance(config.recipe, SpeedrunConfig)
    splits = data.cifar10_splits(config.data_dir if data_dir is None else data_dir,
                                 seed=SPEEDRUN_DATA_SEED if speedrun else config.seed,
                                 subset=config.subset, download=False, progress=progress)
    kind = torch.device(trained.metrics["device"]).type  # metrics.json's "cuda:0": cuda
    device = torch.device(kind if system.device_available(kind) else "cpu")
    precision = trained.metrics["precision"]
    model = trained.model.to(device)
    confusion = empty_confusion()
    if speedrun:  # as common.speedrun scores: the plain forward pass, then with TTA
        test = scoring_batches(splits, device)
        level = config.recipe.tta_level
        scores = {"test": trainer.evaluate(model, test, device, precision),
                  "test_tta": trainer.evaluate(model, test, device, precision,
                                               forward=lambda x: tta_logits(model, x, level),
                                               confusion=confusion)}
    else:
        test = scoring_loader(splits.test, config.recipe, device=device)
        scores = {"test": trainer.evaluate(model, test, device, precision, confusion=confusion)}
    final = trained.metrics["final"]
    return Evaluation(
        scores={k: {"loss": loss, "accuracy": accuracy} for k, (loss, accuracy) in scores.items()},
        confusion=confusion, recorded={k: final[k] for k in scores if k in final},
        data=splits.source, images=len(splits.test),
        own_data=None if config.data_digest is None else splits.digest == config.data_digest,
        precision=precision, device=str(device))


# ---------------------------------------------------------------- training

def _plan(task: str, run: str, module, recipe_of: str | None) -> tuple:
    """(model, recipe, model_kwargs) of script `task`'s run `run` (common.recipes.PLANS), or
    for a module of the caller's own (CUSTOM_MODEL, recipe, {}): the script's recipe, for
    the new run `run`. A name of the script's own runs is refused for a module (its folder
    and config.json would say a registered model trained); `recipe_of` names the run whose
    recipe it takes, needed where the script's runs differ in theirs."""
    if task not in PLANS:
        raise UserError(f"no script {task!r}; choose from {', '.join(PLANS)}")
    runs = PLANS[task]
    if module is None:
        if run not in runs:
            raise UserError(f"{task} has no run {run!r}; choose from {', '.join(runs)}")
        return runs[run]
    if run in runs or not run or run in (".", "..") or "/" in run or os.sep in run:
        reason = (f"is {task}'s own run of {runs[run][0]}" if run in runs
                  else "is not a folder name")
        raise UserError(f"run {run!r} {reason}; give your module's run a name of its own")
    # the speed-run's recipe trains only its own network, by its own loop
    recipes = {name: r for name, (model, r, _) in runs.items() if model != SPEEDRUN_MODEL}
    if recipe_of is not None and recipe_of not in recipes:
        raise UserError(f"recipe={recipe_of!r}: name a run of {task} whose recipe a module "
                        f"can train with: {', '.join(recipes)}")
    distinct = list(dict.fromkeys(recipes.values()))
    if recipe_of is None and len(distinct) != 1:
        raise UserError(f"{task}'s runs train with {len(distinct)} recipes; name the one for "
                        f"your module with recipe= (one of {', '.join(recipes)})")
    return CUSTOM_MODEL, recipes[recipe_of] if recipe_of else distinct[0], {}


def _settings(task: str, run: str, recipe, module, data_dir, settings: dict) -> tuple:
    """(the run's settings, train()'s own, the call as typed for metrics.json's "command");
    a name that is neither kind of setting is a UserError naming it. quick=True fills in
    subset and epochs where they are not given, as --quick does."""
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
    own = ""  # a module of the caller's by its class: its repr spans lines
    if module is not None:  # the record says what trained: this class, not a registered model
        run_settings["model_class"] = f"{type(module).__module__}.{type(module).__qualname__}"
        own = f", model=<{type(module).__qualname__}>"
    given = ({"data_dir": data_dir} if data_dir is not None else {}) | settings
    return run_settings, call, f"api.train({task!r}, {run!r}{own}" + "".join(
        f", {k}={(str(v) if isinstance(v, Path) else v)!r}" for k, v in given.items()) + ")"


def train(task: str, run: str, data_dir=None, *, model: torch.nn.Module | None = None,
          recipe: str | None = None, **settings) -> TrainedRun:
    """Train script `task`'s run `run` as `python TASK.py` trains it (common.run.setup and
    train, or the speed-run's seeds), with settings named as the command line's options:
    subset=, epochs=, batch_size=, lr=, opt=, momentum=, weight_decay=, lr_scheduler=,
    label_smoothing=, patience= (0: off), seed=, precision=, device=, any other field of the
    run's recipe (image_size=, ...), and output_dir= (default outputs/TASK), quick=True (1,000
    images per split, one epoch), progress=True, tensorboard=True, config= (a run's
    config.json), resume= (a checkpoint). Writes the usual run folder and returns the run
    with its trained model in eval mode; like the scripts, it trains again from the start
    when called again (the speed-run loads a seed finished earlier with the same settings,
    as task3e.py does). The output folder is locked while this trains (another process
    writing there is refused) and released when it returns or raises. A setting the library
    refuses is named as given here (subset=0: must be at least 1).

    model=: a torch.nn.Module of your own, trained in place by the same path with the
    script's recipe, as the new run `run` (recipe= names the script's run whose recipe it
    takes where they differ); its config.json says model "custom" and the class.
    load(run_dir, model=YourModule(...)) reads it back."""
    if model is None and recipe is not None:
        raise UserError("recipe= chooses the recipe of a module of your own; give it with "
                        "model=")
    module = None if model is None else _own_module(model)
    model_name, run_recipe, model_kwargs = _plan(task, run, module, recipe)
    if data_dir is not None:  # config.json records it as text, as the command line's
        data_dir = str(Path(data_dir).expanduser())
    run_settings, call, command = _settings(task, run, run_recipe, module, data_dir, settings)
    speedrun = model_name == SPEEDRUN_MODEL
    locks_before = set(FolderLock.held)
    try:
        session = setup(task, [(run, model_name, run_recipe, model_kwargs)],
                        settings={"data_dir": data_dir, **run_settings},
                        config_file=call.get("config"), output_dir=call.get("output_dir"),
                        resume=call.get("resume"), progress=bool(call.get("progress")),
                        tensorboard=bool(call.get("tensorboard")), command=command,
                        figures_to_plots=False,
                        data_seed=SPEEDRUN_DATA_SEED if speedrun else None)
        if speedrun:  # its own loop, one seed: the run's
            seed = session.configs[run].seed
            train_seeds(session, run, [seed])
            return load(session.output_root / run / f"seed{seed}")
        result = train_run(session, run, module)
        raise_kept()  # a signal in the last check: the run is written, the call stops
    except UserError as err:  # named as train() takes it, where the message does not say it
        if err.setting is not None and err.value is not None and \
                str(err.value) not in err.message:
            err = UserError(f"{err.setting}={err.value!r}: {err.message}", setting=err.setting,
                            value=err.value)
        raise err from None
    finally:
        forget_kept()
        for lock in FolderLock.held - locks_before:
            lock.release()
    if "model" not in result:  # run.train_run's word for a run loaded, not trained
        return load(session.output_root / run, model=module)
    metrics = {k: v for k, v in result.items() if k != "model"}
    ran = RunConfig.from_dict(result["config"], "the run's record")  # what ran: auto resolved
    return TrainedRun(result["model"].eval(), preprocessing(ran), ran, metrics,
                      session.output_root / run)
# ---------------------------------------------------------------- ONNX

def export_onnx(trained: TrainedRun, path) -> Path:
    """The run's network as an ONNX file, checked with onnx.checker: input "images", the
    preprocessed float32 batch (N, 3, S, S) with N free; output "logits" (N, 10). The file's
    metadata holds the preprocessing (image size, mean, std) and the class names.

    torch's dynamo exporter (torch.onnx.export(dynamo=True), built on torch.export and
    onnxscript): torch's default since 2.9, it exports every network here offline; the legacy
    TorchScript exporter still works but warns that it will be removed.

    `path` is checked first (common.files.output_file): a folder, a dangling link, a folder
    that is a file or cannot be written in, and an existing file that is not ONNX (an image
    given by mistake) are one UserError line; an ONNX file is replaced."""
    path = output_file(path, "export", "an ONNX file", _is_onnx)
    require_extra("ONNX export", "export", "onnx", "onnxscript")  # torch's exporter needs both
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


def _is_onnx(path: Path) -> bool:
    """Whether the file holds an ONNX model (a graph with nodes), which an export may replace."""
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError):  # not a protobuf (an image, text), or unreadable
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0

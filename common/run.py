"""What a script sets up and runs, in torchvision's order: the session (the runs' records,
device, DDP, the locked output folder, the data, the checkpoint to resume), then one run of a
recipe (seed, model, loaders, start rule, precision, optimizer, loop, save), the speed-run's
seeds, and a study of variants. The command line is common.cli's."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import models, system
from . import results as figures
from .config import (CUSTOM_MODEL, SPEEDRUN_MODEL, RunConfig, load_config, load_confusion,
                     load_finished, read_checkpoint, starting_point)
from .data import CIFAR10Splits, Split, TensorLoader, cifar10_splits
from .errors import (DivergenceError, Interrupted, UserError, keep_until_outputs, raise_kept, require_extra)
from .files import FolderLock, RunDir, claim_folder, ensure_writable_dir, save_csv, save_json
from .models import CNN1g, Model1, Model2
from .speedrun import SpeedrunNet, check_batch_size, run_seeds
from .recipes import Recipe, Variant
from .precision import PrecisionChoice, choose_precision, review_precision
from .trainer import Trainer, make_optimizer, make_scheduler, tensorboard_writer


# ---------------------------------------------------------------- the session

@dataclass(frozen=True)
class Session:
    """What a script set up once for all its runs: their configurations (by run name), the
    device, DDP, the locked output folder, the data and the checkpoint to resume."""
    task: str
    configs: dict
    device: torch.device
    dist: system.DistInfo
    output_root: Path
    figure_dir: Path
    splits: CIFAR10Splits
    progress: bool = False
    tensorboard: bool = False           # scalars in each run folder's tensorboard/
    command: str = ""
    resume: str | None = None
    resume_state: dict | None = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def setup(task: str, plans: list[tuple], *, settings: dict, config_file=None, output_dir=None,
          resume=None, progress: bool = False, tensorboard: bool = False, command: str = "",
          figures_to_plots: bool = True, data_seed: int | None = None) -> Session:
    """Each planned run's configuration (plans: (run, model, recipe, model_kwargs)), built by
    precedence: the recipe, the --config file (which then selects its own run), the settings
    typed; then the device, DDP, the output folder (locked while this script writes it), the
    checkpoint to resume (checked against the runs planned) and the data, split and subset by
    the runs' seed (or `data_seed`, for a script whose seeds leave its data alone). Figures of
    full runs go to plots/ unless figures_to_plots is False."""
    if tensorboard:  # refused before anything is read or written, not at the run's start
        require_extra("TensorBoard logging", "tensorboard", "tensorboard")
    file = load_config(config_file) if config_file else None
    if file is not None:
        _check_target(task, file.task, file.run, [p[0] for p in plans], "config", config_file)
        plans = [p for p in plans if p[0] == file.run]
    configs = {run: RunConfig.build(task, run, model, recipe, model_kwargs=kwargs, file=file,
                                    **settings) for run, model, recipe, kwargs in plans}
    for run, model, _, _ in plans:  # before anything is read: a record names a buildable model
        check_model(configs[run], model, config_file)
    resume_state = None
    if resume:
        resume_state = read_checkpoint(resume)
        saved = RunConfig.from_dict(resume_state["config"], resume)
        _check_target(task, saved.task, saved.run, configs, "resume", resume)
    first = next(iter(configs.values()))  # the runs share their data, device and precision
    device = system.pick_device(first.device)
    dist, device = system.init_distributed(device)
    system.resolve_precision(first.precision, device)  # an impossible one fails before data
    output_root = Path(output_dir or f"outputs/{task}")
    figure_dir = (output_root if (output_dir or first.subset is not None or not figures_to_plots)
                  else Path("plots"))
    if dist.is_main:
        ensure_writable_dir(output_root)
        ensure_writable_dir(figure_dir)
        FolderLock(output_root).acquire()
    data_seed = first.seed if data_seed is None else data_seed
    splits = cifar10_splits(first.data_dir, seed=data_seed, subset=first.subset,
                            progress=progress and dist.is_main)
    configs = {n: dataclasses.replace(c, data_digest=splits.digest) for n, c in configs.items()}
    return Session(task, configs, device, dist, output_root, figure_dir, splits, progress,
                   tensorboard, command, resume, resume_state)


def _check_target(task: str, their_task: str, run: str, runs, setting: str, value):
    """A --resume checkpoint or --config file must be of this script and of a run it trains."""
    what = "checkpoint" if setting == "resume" else "configuration"
    if their_task != task:
        raise UserError(f"a {what} of {their_task}'s run {run}, not of {task}; give it to "
                        f"{their_task}", setting=setting, value=value)
    if run not in runs:
        raise UserError(f"a {what} of run {run}, which this command does not train (it "
                        f"trains {', '.join(runs) or 'no such run'})", setting=setting,
                        value=value)


def facts(session: Session, **more) -> dict:
    """What metrics.json says about how a run went, beside its configuration."""
    return {"data_source": session.splits.source, "command": session.command,
            "machine": system.machine_record(session.device), **more}


# ---------------------------------------------------------------- one run

MODELS = {"cnn1g": CNN1g, "model1": Model1, "model2": Model2,
          "resnet18": models.resnet18_for_transfer}


def build_model(config: RunConfig) -> torch.nn.Module:
    """The run's network, with the initial weights its builder gives (seeded by the caller)."""
    if config.model == SPEEDRUN_MODEL:
        return SpeedrunNet.from_config(config.recipe)
    return MODELS[config.model](**config.model_kwargs)


def _say_main(session: Session):
    """print to stderr, on the main process only."""
    return lambda text: print(text, file=sys.stderr) if session.is_main else None


def check_model(config: RunConfig, planned: str, config_file=None):
    """The run's model is the one its script trains (a config.json of another run cannot
    swap it), and its switches are arguments its builder takes."""
    if config.model != planned:
        raise UserError(f"model {config.model!r}, but {config.task}'s run {config.run} trains "
                        f"{planned!r}", setting="config", value=config_file)
    if config.model == CUSTOM_MODEL:  # the caller's own module, passed to train_run
        return
    speedrun = config.model == SPEEDRUN_MODEL  # built from its recipe alone
    builder = SpeedrunNet.from_config if speedrun else MODELS[planned]
    try:
        inspect.signature(builder).bind(*[config.recipe] * speedrun, **config.model_kwargs)
    except TypeError as err:  # an argument the builder does not take, or one it lacks
        raise UserError(f"model_kwargs {dict(config.model_kwargs)}: {err}",
                        setting="config" if config_file else "model_kwargs",
                        value=config_file) from None


def make_loaders(splits: CIFAR10Splits, recipe: Recipe, *, device, seed: int,
                 dist: system.DistInfo = system.DistInfo()) -> dict:
    """train (shuffled, augmented), train_eval (no augmentation), val and test loaders."""
    if recipe.batch_size > len(splits.train):
        raise UserError(f"larger than the {len(splits.train)} training images",
                        setting="batch_size", value=recipe.batch_size)
    return {
        "train": TensorLoader(splits.train.images, splits.train.labels, recipe.batch_size,
                              train=True, augment=recipe.augment, device=device,
                              normalization=recipe.normalization, resize=_resize(recipe),
                              seed=seed, rank=dist.rank, world_size=dist.world_size),
        "train_eval": scoring_loader(splits.train, recipe, device=device, dist=dist),
        "val": scoring_loader(splits.val, recipe, device=device, dist=dist),
        "test": scoring_loader(splits.test, recipe, device=device, dist=dist),
    }


def scoring_loader(split: Split, recipe: Recipe, *, device,
                   dist: system.DistInfo = system.DistInfo()) -> TensorLoader:
    """A split as a run scores it (its checks, its final table, predict.py --evaluate): in
    order, no augmentation, the recipe's evaluation batch, image size and normalisation."""
    return TensorLoader(split.images, split.labels, recipe.eval_batch_size, device=device,
                        train=False, normalization=recipe.normalization,
                        resize=_resize(recipe), rank=dist.rank, world_size=dist.world_size)


def _resize(recipe: Recipe) -> int | None:
    return recipe.image_size if recipe.image_size != 32 else None  # 32: CIFAR-10's own


def choose_run_precision(session: Session, config: RunConfig, resumed: dict | None = None,
                         module: torch.nn.Module | None = None) -> PrecisionChoice:
    """The precision asked for; under auto the checkpoint's when resuming, else the faster
    here (measured on a copy of `module`, the caller's own, when given); under torchrun every
    rank takes rank 0's."""
    build = (lambda: copy.deepcopy(module)) if module is not None else lambda: build_model(config)
    if resumed is not None and config.precision == "auto":
        choice = PrecisionChoice(resumed["precision"], "auto: the checkpoint's, as the run began")
    else:
        choice = choose_precision(config.precision, session.device, build,
                                  config.recipe.batch_size, getattr(config.recipe, "image_size", 32))
    if session.dist.enabled:
        bf16, = system.all_reduce_sum(
            [float(choice.precision == "bf16") if session.is_main else 0.0], session.device)
        choice = dataclasses.replace(choice, precision="bf16" if bf16 else "fp32")
    if session.is_main:
        print(f"{config.run}: {choice.precision} ({choice.reason})", file=sys.stderr)
    return choice


def train_run(session: Session, name: str, module: torch.nn.Module | None = None,
              **more_facts) -> dict:
    """Train run `name` of the session (torchvision's train.py, in order: seed, data, model,
    optimizer, resume, loop, save); returns its metrics with the history attached and the
    trained model under "model" (a finished run loaded instead has no "model"). `module`: the
    caller's own network (api.train(model=...)), trained in place of the one config.model
    names. `more_facts`: what the script adds to metrics.json about the run (task 4: the
    weights it started from).

    The model is built right after seeding, so its initial weights depend on the seed alone,
    not on the runs a script trained before it: every run is reproduced by running it alone."""
    raise_kept()  # a signal at the end of the previous run: no other begins
    config = session.configs[name]
    recipe = config.recipe
    run_dir = RunDir(session.output_root / name, writer=session.is_main)
    resumed, finished = starting_point(  # resumed beside its finished runs: those are loaded
        config, run_dir, resume_state=session.resume_state, resume_path=session.resume,
        reuse=session.resume_state is not None, say=_say_main(session))
    if finished is not None:
        if session.is_main:
            print(f"{name}: finished earlier with these settings, loaded from {run_dir.path}")
        return finished
    system.seed_everything(config.seed)  # the initial weights: the same on every rank
    model = build_model(config) if module is None else module
    # augmentation and dropout: each rank its own stream (DDP broadcasts rank 0's weights)
    system.seed_everything(config.seed + session.dist.rank)
    loaders = make_loaders(session.splits, recipe, device=session.device, seed=config.seed,
                           dist=session.dist)
    if session.is_main:  # once nothing can refuse the run: a refused one leaves the folder be
        claim_folder(session.output_root, session.task)
    choice = choose_run_precision(session, config, resumed, module)  # leaves seeded streams be
    config = config.resolved(choice.precision, session.device.type)
    optimizer = make_optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(recipe.lr_scheduler, optimizer,
                               recipe.epochs * len(loaders["train"]))
    board = (tensorboard_writer(run_dir.create().path) if session.tensorboard and session.is_main
             else contextlib.nullcontext())
    with board as scalars:
        trainer = Trainer(model, optimizer, loaders, config, precision=choice.precision,
                          facts=facts(session, precision_reason=choice.reason, **more_facts),
                          scheduler=scheduler, device=session.device, run_dir=run_dir.create(),
                          dist=session.dist, progress=session.progress, scalars=scalars)
        if resumed is not None:
            trainer.resume(resumed, session.resume)
        if session.is_main:
            config.save(run_dir.path)
        try:
            result = trainer.fit()
        except Interrupted as stop:
            if stop.result is None:  # stopped mid-run: its checkpoint and resume command
                raise
            keep_until_outputs(stop)  # the run finished: the script's table first, then it
            result = stop.result
    if session.is_main and review_precision(choice, trainer.images_per_second()):
        print(f"{name}: trained far faster than its precision probe's fastest step (under load); "
              f"{choice.precision} stays, said in the reason of the next", file=sys.stderr)
    if session.is_main and "test" in result["final"]:
        figures.confusion_figure(result, load_confusion(run_dir)).draw(run_dir.path)
    return result | {"history": trainer.history, "model": trainer.raw_model}


def train_seeds(session: Session, name: str, seeds: list[int]) -> dict:
    """The speed-run recipe's run `name` once per seed, by its own loop (common.speedrun:
    run_seeds' folders name/seed<N>/, seeds finished earlier loaded), each new seed with its
    confusion figure; the precision chosen as for any run. Returns run_seeds' record."""
    raise_kept()  # a signal at the end of a run before it: the seeds do not begin
    config = session.configs[name]
    check_batch_size(session.splits, config.recipe)
    claim_folder(session.output_root, session.task)
    choice = choose_run_precision(session, config)

    def confusion(run_dir, result):
        figures.confusion_figure(result, load_confusion(run_dir)).draw(run_dir.path)
    return run_seeds(session.splits, config, seeds, root=session.output_root / name,
                     device=session.device, precision=choice.precision,
                     progress=session.progress, on_finished=confusion,
                     facts=facts(session, precision_reason=choice.reason))


def save_results(session: Session, results: dict[str, dict], name: str = "results"):
    """All runs' metrics (without the per-step history or the model) as one JSON beside the
    runs."""
    if session.is_main:
        save_json({k: {kk: vv for kk, vv in v.items() if kk not in ("history", "model")}
                   for k, v in results.items()}, session.output_root / f"{name}.json")


# ---------------------------------------------------------------- studies (tasks 3c-3e)

def run_study(session: Session, variants: list[Variant], *, study: str, baseline_dir=None,
              table_note: str = "") -> dict:
    """Train every variant the session plans (the baseline may be loaded from a finished run,
    read before anything trains), then write the comparison table (CSV + printed) and the
    study's figure (Figure 4 when the variants are exactly the baseline and TanH). A diverging
    variant is a result, not a crash."""
    variants = [v for v in variants if v.name in session.configs]
    results = {}
    if baseline_dir and any(v.name == "baseline" for v in variants):
        finished = load_finished(RunDir(baseline_dir, setting="reuse_baseline"))
        differ = RunConfig.from_dict(finished["config"], baseline_dir).differences(
            session.configs["baseline"], ignore=("task", "run"), names=("there", "here"))
        if differ:
            raise UserError(f"was trained with other settings than this study's baseline "
                            f"({'; '.join(differ[:4])})", setting="reuse_baseline",
                            value=baseline_dir)
        results["baseline"] = finished
        results["baseline"]["note"] = f"loaded from {baseline_dir}"
    for v in variants:
        if v.name in results:
            continue
        try:
            results[v.name] = train_run(session, v.name)
        except DivergenceError as err:
            if session.is_main:
                print(f"{v.name}: diverged: {err}")
            results[v.name] = {"diverged": str(err)}
    results = {v.name: results[v.name] for v in variants}
    if session.is_main:
        _study_outputs(session, variants, results, study, table_note)
    return results


def _study_outputs(session: Session, variants: list[Variant], results: dict, study: str,
                   table_note: str):
    finished = {k: r for k, r in results.items() if "final" in r}
    save_results(session, finished, "results")
    rows = figures.comparison_rows(results)
    descriptions = {v.name: v.description for v in variants}
    for row in rows:
        row["change"] = descriptions.get(row["run"], "")
    save_csv(rows, session.output_root / "results.csv")
    figure = None
    if set(finished) == {"baseline", "tanh"}:
        figure = figures.figure4(finished["baseline"], finished["tanh"])
    elif finished:
        figure = figures.study_figure(study, finished, descriptions)
    title = figure.args["title"] if figure else study
    print(f"\n{title}" + (f" ({table_note})" if table_note else ""))
    print(figures.format_rows(rows))
    if figure:
        print(f"wrote {figure.draw(session.figure_dir)}")

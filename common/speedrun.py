"""The speed-run recipe (task 3e, beyond the report), read top to bottom like airbench: network,
data, training, several seeds. Our own implementation of the methods in Page 2018, "How to train
your ResNet", and Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv
2404.00498), written from the papers' descriptions, not from their code:

- a first layer of 2x2 patch-whitening filters computed from the training images and frozen
  (only its bias trains, for the first few epochs);
- convolutions initialised as identities (Dirac) on the channels they receive;
- BatchNorm with its scale frozen at 1 (bias only), GELU;
- label smoothing; Nesterov SGD with a linear warm-up/decay schedule and weight decay that
  follows the schedule rather than the gradient's scale; biases at a higher rate;
- alternating (derandomised) horizontal flips and random translations by up to 2 pixels;
- test-time augmentation: flipped and one-pixel-shifted views averaged.

Three more options, measured as candidates and left off by the recipe (docs/speedrun.md):
Lookahead, progressive resizing (the first epochs on smaller images) and ReLU for GELU.

Its loop is its own, as airbench's is: a fixed schedule on all 50,000 training images (no
validation split, nothing to select, no early stopping), the whitening layer fitted before the
first step and its bias frozen part-way, scoring with test-time augmentation. The recipe's
values and schedule are in common.recipes, its optimizer below; the training step, the running score,
the divergence check, the log line, evaluation and the run folder's format are the package's.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .models import ACTIVATIONS
from .data import (NUM_CLASSES, SPEEDRUN_NORMALIZATION, AugmentConfig, BatchAugment,
                   CIFAR10Splits, TensorLoader, normalize)
from .config import RunConfig, starting_point
from .errors import UserError
from .files import RunDir, save_json
from .recipes import FILTER_OPTIMIZERS, SpeedrunConfig, WarmupLinear
from .system import epoch_generator, generator, seed_everything
from .trainer import (RunningScore, check_finite, confusion_rows, empty_confusion, evaluate,
                      RunEstimate, duration, log_epoch, progress_bar, train_step)

EVAL_BATCH_SIZE = 1000  # our choice: evaluation only
# every seed trains on all training images in one order: the data (its split and subset) is
# drawn with this seed, whatever the run's own
DATA_SEED = 0


# ---------------------------------------------------------------------------- the network
def patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """Every size x size patch of a (N, C, H, W) batch as rows of C*size*size values, in the
    order a conv weight of shape (out, C, size, size) flattens to."""
    n, c, _, _ = images.shape
    p = images.unfold(2, size, 1).unfold(3, size, 1)        # N, C, H', W', size, size
    return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


def whitening_filters(images: torch.Tensor, size: int = 2, eps: float = 5e-4):
    """(weight, bias) of a conv layer that maps every size x size patch of these images to
    decorrelated unit-variance outputs (ZCA's eigenbasis, PCA-whitened), followed by the same
    filters negated, so that a ReLU-like activation keeps both signs: 2*C*size*size filters."""
    x = patches(images.double(), size)
    mean = x.mean(0)
    cov = torch.cov((x - mean).T)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    w = eigenvectors.T / (eigenvalues.clamp_min(0) + eps).sqrt().unsqueeze(1)  # rows: filters
    c = images.shape[1]
    w = w.flip(0)  # largest-variance direction first
    weight = torch.cat([w, -w]).view(-1, c, size, size)
    bias = -(torch.cat([w, -w]) @ mean)
    return weight.float(), bias.float()


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale stays 1: only the shift (bias) learns."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, momentum=momentum, eps=1e-12)
        self.weight.requires_grad_(False)


class MatrixConv(nn.Module):
    """3x3 convolution, no bias, whose filter bank is stored as one (out, 3 x 3 x in) matrix:
    the shape in which Muon orthogonalises it (torch.optim.Muon takes 2-D parameters only);
    SGD treats it as any other weight. The columns run in channels-last order, so the 4-D view
    the convolution receives is already channels-last. The first min(in, out) filters start
    as identities (Dirac) on the channels they receive."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin = cin
        self.weight = nn.Parameter(torch.empty(cout, 9 * cin))
        with torch.no_grad():
            filters = self.filters()
            nn.init.kaiming_uniform_(filters, a=5 ** 0.5)  # nn.Conv2d's own initialisation
            k = min(cin, cout)
            nn.init.dirac_(filters[:k, :k])
            filters[:k, k:].zero_()

    def filters(self) -> torch.Tensor:
        """The (out, in, 3, 3) view of the matrix."""
        return self.weight.view(len(self.weight), 3, 3, self.cin).permute(0, 3, 1, 2)

    def forward(self, x):
        return F.conv2d(x, self.filters(), padding=1)


# Jordan 2024's GELU; ReLU, whose step a benchmark measured cheaper on a CPU, a candidate
# that lost (docs/speedrun.md)


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, bn_momentum: float, activation: str = "gelu"):
        act = ACTIVATIONS[activation]
        super().__init__(
            MatrixConv(cin, cout), nn.MaxPool2d(2), FrozenScaleBatchNorm(cout, bn_momentum),
            act(), MatrixConv(cout, cout), FrozenScaleBatchNorm(cout, bn_momentum), act())


class SpeedrunNet(nn.Module):
    """whiten (2x2, frozen) -> GELU -> 3 conv groups (each halves the map) -> max -> linear."""

    def __init__(self, widths=(64, 256, 256), patch: int = 2, bn_momentum: float = 0.4,
                 head_scale: float = 1 / 9, num_classes: int = NUM_CLASSES,
                 activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from "
                             f"{', '.join(ACTIVATIONS)}")
        whiten_width = 2 * 3 * patch * patch
        self.whiten = nn.Conv2d(3, whiten_width, patch, bias=True)
        self.whiten.weight.requires_grad_(False)
        chans = [whiten_width, *widths]
        self.activation = ACTIVATIONS[activation]()
        self.groups = nn.Sequential(*[ConvGroup(a, b, bn_momentum, activation)
                                      for a, b in zip(chans, chans[1:])])
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.head_scale = head_scale

    @classmethod
    def from_config(cls, cfg: SpeedrunConfig) -> "SpeedrunNet":
        return cls(cfg.widths, cfg.whiten_patch, cfg.bn_momentum, cfg.head_scale,
                   activation=cfg.activation)

    def filter_matrices(self):
        """The conv groups' filter banks, each a matrix (Muon's parameters)."""
        return (m.weight for m in self.modules() if isinstance(m, MatrixConv))

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4):
        weight, bias = whitening_filters(images, self.whiten.kernel_size[0], eps)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.copy_(bias)

    def forward(self, x):
        x = self.groups(self.activation(self.whiten(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.head_scale


# ---------------------------------------------------------------------------- data
class TrainBatches:
    """All training images as one uint8 tensor on the device, served in shuffled batches with
    the recipe's two augmentations applied to whole batches:
    alternating flip: each image is mirrored in every other epoch, from a random first epoch
      on (Jordan 2024's derandomised flip: every image is seen both ways in any two epochs);
    translation: shifted by up to `translate_px` whole pixels in x and y, the uncovered
      border black or mirrored (the package's batched translation, common.data.BatchAugment)."""

    def __init__(self, images, labels, batch_size: int, *, device, seed: int, translate_px: int,
                 translate_reflect: bool = False):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.device, self.seed = batch_size, torch.device(device), seed
        self.flip_phase = (torch.rand(len(labels), generator=epoch_generator(seed, 99_991))
                           < 0.5).to(device)
        self.translate = BatchAugment(AugmentConfig(translate_px=translate_px,
                                                    translate_reflect=translate_reflect))

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size  # the last incomplete batch is dropped

    def epoch(self, epoch: int):
        order = torch.randperm(len(self.labels), generator=epoch_generator(self.seed, epoch))
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            flip = self.flip_phase[idx] ^ bool(epoch % 2)
            images = torch.where(flip.view(-1, 1, 1, 1), self.images[idx].flip(-1),
                                 self.images[idx])
            x = self.translate(images.float().div_(255))
            yield normalize(x, SPEEDRUN_NORMALIZATION), self.labels[idx]


# ---------------------------------------------------------------------------- training
class Optimizers:
    """Several optimizers stepped as one: the speed-run's Muon for the filters beside SGD for
    the rest. Each keeps its own schedule (a scheduler takes a single optimizer)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.optimizers:
            o.step()


def make_speedrun_optimizer(model, cfg: SpeedrunConfig) -> Optimizers:
    """Nesterov SGD (Jordan 2024), biases at bias_lr_scale times the rate; with
    filter_optimizer "muon", the conv filters (the model's `filter_matrices()`) are Muon's
    instead. PyTorch's weight_decay is multiplied by the (scheduled) rate, so setting it to
    decay / peak rate makes the decay per step the same in both groups and independent of the
    rate's size (it still follows the schedule, and passes through the momentum buffer, as in
    the published recipe: not AdamW-style decoupling from the gradient step)."""
    if cfg.filter_optimizer not in FILTER_OPTIMIZERS:
        raise ValueError(f"unknown filter optimizer {cfg.filter_optimizer!r}; choose from "
                         f"{FILTER_OPTIMIZERS}")
    muon = list(model.filter_matrices()) if cfg.filter_optimizer == "muon" else []
    taken = {id(p) for p in muon}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in taken]
    biases = [p for n, p in named if n.endswith("bias")]
    others = [p for n, p in named if not n.endswith("bias")]
    lr_b = cfg.lr * cfg.bias_lr_scale
    groups = [dict(params=others, lr=cfg.lr, weight_decay=cfg.weight_decay / cfg.lr),
              dict(params=biases, lr=lr_b, weight_decay=cfg.weight_decay / lr_b)]
    sgd = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    if not muon:
        return Optimizers(sgd)
    return Optimizers(sgd, make_muon(muon, cfg))


def make_muon(filters: list, cfg: SpeedrunConfig) -> torch.optim.Muon:
    """torch's Muon (2-D parameters: each filter bank as one (out, in x k x k) matrix), no
    weight decay. Its orthogonalised step has a fixed size, so the filters' norm alone would
    set the effective rate (BatchNorm follows each conv: only their direction matters); as in
    airbench94_muon, each matrix is rescaled to norm sqrt(rows) before every step, which holds
    that rate where the schedule puts it."""
    muon = torch.optim.Muon(filters, lr=cfg.muon_lr, momentum=cfg.muon_momentum, nesterov=True,
                            weight_decay=0.0, ns_steps=cfg.muon_ns_steps)

    @torch.no_grad()
    def renormalize(optimizer, args, kwargs):
        for p in filters:
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
    muon.register_step_pre_hook(renormalize)
    return muon


class Lookahead:
    """Lookahead (Zhang et al. 2019) as Jordan 2024 schedules it: every `every` steps a slow
    copy of the weights (BatchNorm's running statistics included) moves toward the trained
    ones by 1 - decay, and the trained ones are set to it. The decay grows as (step/total)^3
    up to `decay`: the early run is left alone, its end averaged. `finish` ends on the slow
    copy."""
    every, decay = 5, 0.95 ** 5

    def __init__(self, model: nn.Module, total_steps: int):
        self.model, self.total = model, max(total_steps, 1)
        self.slow = [t.detach().clone() for t in self._weights()]

    def _weights(self):
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    @torch.no_grad()
    def pull(self, decay: float):
        for slow, fast in zip(self.slow, self._weights()):
            slow.lerp_(fast, 1 - decay)
            fast.copy_(slow)

    def step(self, step: int):
        if step % self.every == 0:
            self.pull(self.decay * (step / self.total) ** 3)

    def finish(self):
        self.pull(1.0)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, tta_level: int) -> torch.Tensor:
    """Logits, averaged over test-time views: level 1 adds the mirror image; level 2 also the
    image shifted one pixel up-left and one down-right (each with its mirror), at half weight."""
    def with_flip(v):
        if tta_level == 0:
            return model(v)
        return 0.5 * (model(v) + model(v.flip(-1)))

    logits = with_flip(x)
    if tta_level >= 2:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
        logits = 0.5 * logits + 0.25 * sum(with_flip(s) for s in shifted)
    return logits



def training_images(splits: CIFAR10Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training image: the recipe has no validation split."""
    return (torch.cat([splits.train.images, splits.val.images]),
            torch.cat([splits.train.labels, splits.val.labels]))


def scoring_batches(splits: CIFAR10Splits, device) -> TensorLoader:
    """The test images as the recipe scores them."""
    return TensorLoader(splits.test.images, splits.test.labels, EVAL_BATCH_SIZE, device=device,
                        train=False, normalization=SPEEDRUN_NORMALIZATION)


def check_batch_size(splits: CIFAR10Splits, cfg: SpeedrunConfig):
    """A batch larger than the training set would train on fewer images than it records."""
    n = len(splits.train) + len(splits.val)
    if cfg.batch_size > n:
        raise UserError(f"larger than the {n} training images", setting="batch_size",
                        value=cfg.batch_size)


def _fit_whitening(model: SpeedrunNet, images: torch.Tensor, cfg: SpeedrunConfig,
                   seed: int) -> float:
    """Seconds spent fitting the whitening layer to a random sample of the training images
    (a random one: image folders list the training images class by class)."""
    start = time.perf_counter()
    sample = torch.randperm(len(images), generator=generator(seed))[:cfg.whiten_images]
    model.init_whitening(normalize(images[sample], SPEEDRUN_NORMALIZATION, channels_last=False),
                         cfg.whiten_eps)
    return time.perf_counter() - start


def _train_epoch(model, optimizer, schedulers, batches, epoch: int, *, cfg, device, precision,
                 history: dict, bar, lookahead: Lookahead | None,
                 ema: AveragedModel | None, estimate: RunEstimate, say: bool,
                 run_name: str) -> RunningScore:
    if epoch == cfg.whiten_bias_epochs:
        model.whiten.bias.requires_grad_(False)
    score = RunningScore()
    for x, y in batches.epoch(epoch):
        if epoch < cfg.low_res_epochs:
            x = F.interpolate(x, size=cfg.low_res_px, mode="bilinear", antialias=True)
        loss, correct = train_step(model, optimizer, x, y, device, precision, cfg.label_smoothing)
        for scheduler in schedulers:
            scheduler.step()
        history["step_loss"].append(loss)
        if lookahead is not None:
            lookahead.step(len(history["step_loss"]))
        if ema is not None:
            ema.update_parameters(model)
        check_finite(loss, "training loss", f"epoch {epoch + 1}, step {len(history['step_loss'])}",
                     lr=optimizer.param_groups[0]["lr"])
        score.add(loss, correct, len(y))
        estimate.step_done()
        step_in_epoch = len(history["step_loss"]) - epoch * len(batches)
        if say and estimate.due(step_in_epoch):
            tqdm.write(estimate.line(run_name, epoch), file=sys.stderr)
        # tqdm's ETA is the epoch's; the run's beside it
        bar.set_postfix(run_left=duration(estimate.left(epoch, step_in_epoch)[1]),
                        refresh=False)
        bar.update(1)
    return score


def train_speedrun(splits: CIFAR10Splits, cfg: SpeedrunConfig, *, device,
                   precision: str = "fp32", seed: int = 0, progress: bool = False,
                   run_name: str = "speedrun", monitor: bool = True) -> tuple[dict, nn.Module]:
    """Train on train+validation (all training images), score on test. Returns (metrics with
    the history and the confusion matrix, model). `monitor`: test accuracy after each epoch,
    its cost kept out of `train_time_s` but inside `wall_time_s`."""
    t_start = time.perf_counter()
    check_batch_size(splits, cfg)
    seed_everything(seed)
    images, labels = training_images(splits)
    batches = TrainBatches(images, labels, cfg.batch_size, device=device, seed=seed,
                           translate_px=cfg.translate_px, translate_reflect=cfg.translate_reflect)
    test = scoring_batches(splits, device)
    model = SpeedrunNet.from_config(cfg)
    whiten_time = _fit_whitening(model, images, cfg, seed)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = make_speedrun_optimizer(model, cfg)
    multiplier = WarmupLinear(cfg.epochs * len(batches), cfg.warmup, cfg.lr_start, cfg.lr_end)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, multiplier) for o in optimizer.optimizers]
    lookahead = Lookahead(model, cfg.epochs * len(batches)) if cfg.lookahead else None
    history, train_time, ema = {"checks": [], "step_loss": []}, 0.0, None
    # the monitoring evaluation after each epoch is the loop's one check
    estimate = RunEstimate(epochs=cfg.epochs, steps_per_epoch=len(batches),
                           check_steps={len(batches)} if monitor else set(),
                           check_images=len(test) * test.batch_size, batch_size=cfg.batch_size,
                           early_stopping=False)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        estimate.start()
        if cfg.ema_epochs and epoch == max(cfg.epochs - cfg.ema_epochs, 0):
            # BatchNorm's statistics averaged with the weights (use_buffers): no extra pass
            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                use_buffers=True)
        with progress_bar(len(batches), f"{run_name} epoch {epoch + 1}/{cfg.epochs}",
                          progress) as bar:
            score = _train_epoch(model, optimizer, schedulers, batches, epoch, cfg=cfg,
                                 device=device, precision=precision, history=history, bar=bar,
                                 lookahead=lookahead, ema=ema, estimate=estimate,
                                 say=progress or monitor, run_name=run_name)
        if lookahead is not None and epoch == cfg.epochs - 1:
            lookahead.finish()
        if ema is not None and epoch == cfg.epochs - 1:
            model.load_state_dict(ema.module.state_dict())
        train_time += time.perf_counter() - t0
        train_loss, train_acc = score.means()
        row = {"epoch": epoch + 1, "step": len(history["step_loss"]), "train_loss": train_loss,
               "train_accuracy": train_acc, "test_loss": float("nan"),
               "test_accuracy": float("nan"), "train_time_s": round(train_time, 2),
               "wall_time_s": round(time.perf_counter() - t_start, 2),
               "lr": optimizer.param_groups[0]["lr"]}
        if monitor or epoch == cfg.epochs - 1:
            row["test_loss"], row["test_accuracy"] = evaluate(model, test, device, precision)
            estimate.check_done()
        history["checks"].append(row)
        if progress or monitor:
            log_epoch(run_name, row, seconds_key="train_time_s")
    return _score(model, test, cfg, device=device, precision=precision, seed=seed,
                  run_name=run_name, history=history, times=(whiten_time, train_time),
                  t_start=t_start), model


def _score(model, test, cfg, *, device, precision, seed, run_name, history, times,
           t_start) -> dict:
    """The final scoring with test-time augmentation, and the run's metrics."""
    t0 = time.perf_counter()
    confusion = empty_confusion()
    tta_loss, tta_acc = evaluate(model, test, device, precision,
                                 forward=lambda x: predict(model, x, cfg.tta_level),
                                 confusion=confusion)
    tta_time = time.perf_counter() - t0
    whiten_time, train_time = times
    last = history["checks"][-1]
    return {
        "run": run_name,
        "final": {"test": {"loss": last["test_loss"], "accuracy": last["test_accuracy"]},
                  "test_tta": {"loss": tta_loss, "accuracy": tta_acc}},
        "whiten_time_s": round(whiten_time, 2),
        "train_time_s": round(train_time, 2),
        "tta_time_s": round(tta_time, 2),
        # what the recipe costs: whitening fit, training and the final scoring (the per-epoch
        # monitoring evaluations and data preparation aside)
        "recipe_time_s": round(whiten_time + train_time + tta_time, 2),
        "wall_time_s": round(time.perf_counter() - t_start, 2),
        "epochs_completed": cfg.epochs,
        "precision": precision,
        "device": str(device),
        "seed": seed,
        "history": history,
        "confusion": confusion_rows(confusion),
    }


# ---------------------------------------------------------------------------- several seeds
def run_seeds(splits: CIFAR10Splits, config: RunConfig, seeds: list[int], *, root: Path,
              device, precision: str, facts: dict | None = None, progress: bool = False,
              on_finished=None) -> dict:
    """Train the run `config` describes once per seed under root/seed<N>/; a seed finished
    earlier with the same configuration, precision and device is loaded, not retrained: an
    interrupted study loses at most the seed it was on. `facts`: what each seed's metrics.json
    says about how it ran. `on_finished(run_dir, result)` is called after each newly trained
    seed (its figure). Returns {"runs": {seed: result}, "summary", "precision"}."""
    runs = {}
    config = config.resolved(precision, torch.device(device).type)
    for seed in seeds:
        seed_config = config.with_settings(seed=seed)
        run_dir = RunDir(root / f"seed{seed}")
        _, result = starting_point(seed_config, run_dir, reuse=True)
        if result is not None:
            print(f"{root.name} seed {seed}: finished earlier, loaded from {run_dir.path}")
        else:
            result, model = train_speedrun(splits, seed_config.recipe, device=device,
                                           precision=precision, seed=seed, progress=progress,
                                           run_name=f"{root.name} seed {seed}")
            run_dir.create()
            seed_config.save(run_dir.path)
            run_dir.save_best(model.state_dict(), seed_config.to_dict())
            run_dir.write_history(result["history"])
            run_dir.write_confusion(result.pop("confusion"))
            result["config"] = seed_config.to_dict()  # as a seed loaded back has it
            run_dir.write_metrics({k: v for k, v in result.items() if k != "history"}
                                  | (facts or {}))
            if on_finished is not None:
                on_finished(run_dir, result)
        runs[seed] = result
    summary = summarize(runs)
    save_json({"summary": summary, "config": config.to_dict(), "data_source": splits.source,
               "runs": {s: {k: v for k, v in r.items() if k != "history"}
                        for s, r in runs.items()}}, root / "results.json")
    return {"runs": runs, "summary": summary, "precision": precision}


def summarize(runs: dict) -> dict:
    """Mean, spread (sample standard deviation) and range of the accuracies and times."""
    def stats(values):
        values = list(values)
        return {"mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    rs = list(runs.values())
    return {"seeds": list(runs), "n": len(rs),
            "test_accuracy_tta": stats(100 * r["final"]["test_tta"]["accuracy"] for r in rs),
            "test_accuracy": stats(100 * r["final"]["test"]["accuracy"] for r in rs),
            "recipe_time_s": stats(r["recipe_time_s"] for r in rs),
            "wall_time_s": stats(r["wall_time_s"] for r in rs)}

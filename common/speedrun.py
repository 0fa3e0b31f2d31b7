"""The speed-run recipe (task 3e, beyond the report), read top to bottom like airbench: config,
network, data, training, several seeds. Our own implementation of the methods in Page 2018,
"How to train your ResNet", and Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"
(arXiv 2404.00498), written from the papers' descriptions, not from their code:

- a first layer of 2x2 patch-whitening filters computed from the training images and frozen
  (only its bias trains, for the first few epochs);
- convolutions initialised as identities (Dirac) on the channels they receive;
- BatchNorm with its scale frozen at 1 (bias only), GELU;
- label smoothing; Nesterov SGD with a linear warm-up/decay schedule and weight decay that
  follows the schedule rather than the gradient's scale (decoupled); biases at a higher rate;
- alternating (derandomised) horizontal flips and random translations by up to 2 pixels;
- test-time augmentation: flipped and one-pixel-shifted views averaged.

Its loop is its own, as airbench's is: a fixed schedule on all 50,000 training images (no
validation split, nothing to select, no early stopping), the whitening layer fitted before the
first step and its bias frozen part-way, scoring with test-time augmentation. The training
step, the running score, the divergence check, the log line, evaluation and the run folder's
format are the package's (common.trainer, common.evaluation, common.rundir).
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, BatchAugment
from . import plotting
from .data import CLASSES
from .evaluation import evaluate
from .io import save_json
from .loader import TensorLoader, normalize
from .progress import log_epoch, progress_bar
from .rundir import RunDir
from .seeding import epoch_generator, generator, seed_everything
from .trainer import RunningScore, check_finite, train_step

# CIFAR-10 training-set channel statistics (the whitening layer absorbs any scale anyway)
SPEEDRUN_NORMALIZATION = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
EVAL_BATCH_SIZE = 1000  # our choice: evaluation only


@dataclass(frozen=True)
class SpeedrunConfig:
    widths: tuple = (64, 256, 256)   # channels of the three conv groups
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1.5                  # peak, for the batch-mean loss
    bias_lr_scale: float = 64.0      # BatchNorm and whitening biases learn this much faster
    momentum: float = 0.85           # Nesterov
    weight_decay: float = 2e-3       # per step at the peak rate, scaled by the schedule
    label_smoothing: float = 0.2
    translate_px: int = 2
    whiten_patch: int = 2
    whiten_eps: float = 5e-4
    whiten_images: int = 5000        # images the whitening statistics come from
    whiten_bias_epochs: int = 3
    bn_momentum: float = 0.4         # PyTorch convention: weight of the newest batch
    head_scale: float = 1 / 9
    warmup: float = 0.23             # fraction of steps to the peak rate
    lr_start: float = 0.2            # schedule multipliers: start, peak 1, end
    lr_end: float = 0.07
    tta_level: int = 2               # 0 none, 1 flip, 2 flip and one-pixel shifts

    def describe(self) -> dict:
        return asdict(self)

    def with_batch_size(self, batch_size: int) -> "SpeedrunConfig":
        """Another batch, with the rate and the weight decay scaled with it (the published
        values are per summed loss, so they scale with the batch)."""
        scale = batch_size / self.batch_size
        return dataclasses.replace(self, batch_size=batch_size, lr=self.lr * scale,
                                   weight_decay=self.weight_decay * scale)


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


def dirac_conv(cin: int, cout: int) -> nn.Conv2d:
    """3x3 conv, no bias; its first min(cin, cout) filters start as identities."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        k = min(cin, cout)
        nn.init.dirac_(conv.weight[:k, :k])
        conv.weight[:k, k:].zero_()
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__(
            dirac_conv(cin, cout), nn.MaxPool2d(2), FrozenScaleBatchNorm(cout, bn_momentum),
            nn.GELU(), dirac_conv(cout, cout), FrozenScaleBatchNorm(cout, bn_momentum),
            nn.GELU())


class SpeedrunNet(nn.Module):
    """whiten (2x2, frozen) -> GELU -> 3 conv groups (each halves the map) -> max -> linear."""

    def __init__(self, widths=(64, 256, 256), patch: int = 2, bn_momentum: float = 0.4,
                 head_scale: float = 1 / 9, num_classes: int = 10):
        super().__init__()
        whiten_width = 2 * 3 * patch * patch
        self.whiten = nn.Conv2d(3, whiten_width, patch, bias=True)
        self.whiten.weight.requires_grad_(False)
        chans = [whiten_width, *widths]
        self.groups = nn.Sequential(*[ConvGroup(a, b, bn_momentum)
                                      for a, b in zip(chans, chans[1:])])
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.head_scale = head_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4):
        weight, bias = whitening_filters(images, self.whiten.kernel_size[0], eps)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.copy_(bias)

    def forward(self, x):
        x = self.groups(F.gelu(self.whiten(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.head_scale


# ---------------------------------------------------------------------------- data
class TrainBatches:
    """All training images as one uint8 tensor on the device, served in shuffled batches with
    the recipe's two augmentations applied to whole batches:
    alternating flip: each image is mirrored in every other epoch, from a random first epoch
      on (Jordan 2024's derandomised flip: every image is seen both ways in any two epochs);
    translation: shifted by up to `translate_px` whole pixels in x and y, the uncovered
      border black (the package's batched translation, common.augment)."""

    def __init__(self, images, labels, batch_size: int, *, device, seed: int, translate_px: int):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.device, self.seed = batch_size, torch.device(device), seed
        self.flip_phase = (torch.rand(len(labels), generator=epoch_generator(seed, 99_991))
                           < 0.5).to(device)
        self.translate = BatchAugment(AugmentConfig(translate_px=translate_px))

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
def lr_multiplier(step: int, total: int, cfg: SpeedrunConfig) -> float:
    """Linear from lr_start up to 1 at `warmup` of the run, then linear down to lr_end."""
    t = step / max(total, 1)
    if t < cfg.warmup:
        return cfg.lr_start + (1 - cfg.lr_start) * t / cfg.warmup
    return 1 + (cfg.lr_end - 1) * (t - cfg.warmup) / (1 - cfg.warmup)


def make_optimizer(model: SpeedrunNet, cfg: SpeedrunConfig):
    """Nesterov SGD. PyTorch's weight_decay is multiplied by the (scheduled) rate, so setting
    it to decay / peak rate makes the decay per step the same in both groups and independent
    of the rate's size (it still follows the schedule, and passes through the momentum
    buffer, as in the published recipe: not AdamW-style decoupling from the gradient step)."""
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    others = [p for n, p in model.named_parameters()
              if p.requires_grad and not n.endswith("bias")]
    lr_b = cfg.lr * cfg.bias_lr_scale
    groups = [dict(params=others, lr=cfg.lr, weight_decay=cfg.weight_decay / cfg.lr),
              dict(params=biases, lr=lr_b, weight_decay=cfg.weight_decay / lr_b)]
    return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)


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


def train_speedrun(splits, cfg: SpeedrunConfig, *, device, precision: str = "fp32",
                   seed: int = 0, progress: bool = False, run_name: str = "speedrun",
                   monitor: bool = True) -> tuple[dict, nn.Module]:
    """Train on train+validation (all training images), score on test. Returns (metrics with
    the history, model). `monitor`: test accuracy after each epoch, its cost kept out of
    `train_time_s` but inside `wall_time_s`."""
    t_start = time.perf_counter()
    seed_everything(seed)
    images = torch.cat([splits.train.images, splits.val.images])
    labels = torch.cat([splits.train.labels, splits.val.labels])
    cfg = dataclasses.replace(cfg, batch_size=min(cfg.batch_size, len(labels)))
    train = TrainBatches(images, labels, cfg.batch_size, device=device, seed=seed,
                         translate_px=cfg.translate_px)
    test = TensorLoader(splits.test.images, splits.test.labels, EVAL_BATCH_SIZE, device=device,
                        train=False, normalization=SPEEDRUN_NORMALIZATION)

    t_recipe = time.perf_counter()
    model = SpeedrunNet(cfg.widths, cfg.whiten_patch, cfg.bn_momentum, cfg.head_scale)
    # a random sample: image folders list the training images class by class
    sample = torch.randperm(len(images), generator=generator(seed))[:cfg.whiten_images]
    model.init_whitening(normalize(images[sample], SPEEDRUN_NORMALIZATION, channels_last=False),
                         cfg.whiten_eps)
    whiten_time = time.perf_counter() - t_recipe
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    total = cfg.epochs * len(train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total, cfg))

    history = {"checks": [], "step_loss": []}
    train_time, step = 0.0, 0
    model.train()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        if epoch == cfg.whiten_bias_epochs:
            model.whiten.bias.requires_grad_(False)
        score = RunningScore()
        with progress_bar(len(train), f"{run_name} epoch {epoch + 1}/{cfg.epochs}",
                          progress) as bar:
            for x, y in train.epoch(epoch):
                loss, correct = train_step(model, optimizer, x, y, device, precision,
                                           cfg.label_smoothing)
                scheduler.step()
                step += 1
                check_finite(loss, "training loss", f"epoch {epoch + 1}, step {step}")
                history["step_loss"].append(loss)
                score.add(loss, correct, len(y))
                bar.update(1)
        train_time += time.perf_counter() - t0
        train_loss, train_acc = score.means()
        row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
               "train_accuracy": train_acc, "test_loss": float("nan"),
               "test_accuracy": float("nan"), "train_time_s": round(train_time, 2),
               "wall_time_s": round(time.perf_counter() - t_start, 2),
               "lr": optimizer.param_groups[0]["lr"]}
        if monitor or epoch == cfg.epochs - 1:
            row["test_loss"], row["test_accuracy"] = evaluate(model, test, device, precision)
        history["checks"].append(row)
        if progress or monitor:
            log_epoch(run_name, row, seconds_key="train_time_s")

    t0 = time.perf_counter()
    confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.int64)
    tta_loss, tta_acc = evaluate(model, test, device, precision,
                                 forward=lambda x: predict(model, x, cfg.tta_level),
                                 confusion=confusion)
    tta_time = time.perf_counter() - t0
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
        "recipe": cfg.describe(),
        "history": history,
        "confusion": confusion,
    }, model


# ---------------------------------------------------------------------------- several seeds
def run_seeds(session, cfg: SpeedrunConfig, seeds: list[int], name: str = "speedrun") -> dict:
    """Train the recipe once per seed under <output>/name/seed<N>/; a seed finished earlier
    with the same recipe, precision, device and data is loaded, not retrained (an interrupted
    study loses at most the seed it was on). Returns {"runs": {seed: result}, "summary"}."""
    root = session.output_root / name
    precision, why = session.choose_precision(
        lambda: SpeedrunNet(cfg.widths, cfg.whiten_patch, cfg.bn_momentum, cfg.head_scale),
        cfg.batch_size)
    print(f"{name}: {precision} ({why})", file=sys.stderr)
    identity = {"recipe": cfg.describe(), "precision": precision,
                "device": str(session.device), "data_source": session.splits.source,
                "subset": session.settings.subset}
    identity = json.loads(json.dumps(identity))  # as it reads back from metrics.json
    runs = {}
    for seed in seeds:
        run_dir = RunDir(root / f"seed{seed}")
        result = run_dir.load_finished() if run_dir.is_finished() else None
        if result is not None and all(result.get(k) == v for k, v in identity.items()):
            print(f"{name} seed {seed}: finished earlier, loaded from {run_dir.path}")
        else:
            result, model = train_speedrun(session.splits, cfg, device=session.device,
                                           precision=precision, seed=seed,
                                           progress=session.settings.progress,
                                           run_name=f"{name} seed {seed}")
            run_dir.create()
            run_dir.save_best({"model": model.state_dict(), "args": identity})
            run_dir.write_history(result["history"])
            run_dir.write_confusion(result.pop("confusion"))
            acc = 100 * result["final"]["test_tta"]["accuracy"]
            plotting.plot_confusion(run_dir.confusion(), run_dir / "confusion.png",
                                    f"{name} seed {seed}: test set with TTA ({acc:.2f} % correct)")
            run_dir.write_metrics({k: v for k, v in result.items() if k != "history"}
                                  | identity | {"command": session.settings.command,
                                                "precision_reason": why})
        runs[seed] = result
    summary = summarize(runs)
    save_json({"summary": summary, "recipe": cfg.describe(), "data_source": session.splits.source,
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

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
values and schedule are in common.recipes, its optimizer below; the training step, what a loop
shows while it trains (common.trainer.Progress: the bar, the expected time, the running score,
the log line), evaluation and the run folder's format are the package's.
"""
import math
import statistics
from time import perf_counter
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .models import ACTIVATIONS
from .data import (NUM_CLASSES, SPEEDRUN_NORMALIZATION, AugmentConfig, BatchAugment,
                   TensorLoader, normalize)
from .config import starting_point
from .errors import DivergenceError, UserError
from .files import CONFUSION_NAME, METRICS_NAME, RunDir, save_json
from .recipes import FILTER_OPTIMIZERS, SpeedrunConfig, WarmupLinear
from .system import epoch_generator, generator, seed_everything
from .trainer import Progress, confusion_rows, empty_confusion, evaluate, train_step

EVAL_BATCH_SIZE = 1000  # our choice: evaluation only
# every seed trains on all training images in one order: the data (its split and subset) is
# drawn with this seed, whatever the run's own
DATA_SEED = 0


# ---------------------------------------------------------------------------- the network
def patches(images, size):
    """Every size x size patch of a (N, C, H, W) batch as rows of C*size*size values, in the
    order a conv weight of shape (out, C, size, size) flattens to."""
    return F.unfold(images, size).mT.flatten(0, 1)


def whitening_filters(images, size, eps):
    """(weight, bias) of a conv layer that maps every size x size patch of these images to
    decorrelated unit-variance outputs (ZCA's eigenbasis, PCA-whitened), followed by the same
    filters negated, so that a ReLU-like activation keeps both signs: 2*C*size*size filters."""
    x = patches(images.double(), size)
    mean = x.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((x - mean).T))
    # rows: filters, the largest-variance direction first
    w = (eigenvectors / (eigenvalues.clamp_min(0) + eps).sqrt()).T.flip(0)
    w = torch.cat([w, -w])
    return w.unflatten(1, (-1, size, size)).float(), (-(w @ mean)).float()


class MatrixConv(nn.Module):
    """3x3 convolution, no bias, whose filter bank is stored as one (out, 3 x 3 x in) matrix:
    the shape in which Muon orthogonalises it (torch.optim.Muon takes 2-D parameters only);
    SGD treats it as any other weight. The columns run in channels-last order, so the 4-D view
    the convolution receives is already channels-last. The first min(in, out) filters start
    as identities (Dirac) on the channels they receive."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, 9 * cin))
        filters = self.filters()
        nn.init.kaiming_uniform_(filters, a=5 ** 0.5)  # nn.Conv2d's own initialisation
        # identities on the first min(in, out) channels, zeros beside them
        nn.init.dirac_(filters[:min(cin, cout)])

    def filters(self):
        """The (out, in, 3, 3) view of the matrix."""
        return self.weight.unflatten(1, (3, 3, -1)).permute(0, 3, 1, 2)

    def forward(self, x):
        return F.conv2d(x, self.filters(), padding=1)


def conv_group(cin, cout, cfg):
    """conv -> max-pool -> BatchNorm -> activation -> conv -> BatchNorm -> activation."""
    act = ACTIVATIONS[cfg.activation]

    def norm():  # its scale stays 1: only its shift learns
        bn = nn.BatchNorm2d(cout, momentum=cfg.bn_momentum, eps=1e-12)
        bn.weight.requires_grad_(False)
        return bn
    return nn.Sequential(MatrixConv(cin, cout), nn.MaxPool2d(2), norm(), act(),
                         MatrixConv(cout, cout), norm(), act())


class SpeedrunNet(nn.Module):
    """whiten (2x2, frozen) -> GELU -> 3 conv groups (each halves the map) -> max -> linear.
    Built from a SpeedrunConfig, keywords changing its fields (SpeedrunNet(widths=...))."""

    def __init__(self, cfg=SpeedrunConfig(), **changes):
        super().__init__()
        cfg = replace(cfg, **changes)
        chans = [2 * 3 * cfg.whiten_patch ** 2, *cfg.widths]
        self.whiten = nn.Conv2d(3, chans[0], cfg.whiten_patch)
        self.whiten.weight.requires_grad_(False)
        self.activation = ACTIVATIONS[cfg.activation]()
        self.groups = nn.Sequential(*[conv_group(a, b, cfg) for a, b in zip(chans, chans[1:])])
        self.head = nn.Linear(chans[-1], NUM_CLASSES, bias=False)
        self.head_scale = cfg.head_scale

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg)

    def filter_matrices(self):
        """The conv groups' filter banks, each a matrix (Muon's parameters)."""
        return (m.weight for m in self.modules() if isinstance(m, MatrixConv))

    @torch.no_grad()
    def init_whitening(self, images, eps):
        weight, bias = whitening_filters(images, self.whiten.kernel_size[0], eps)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.copy_(bias)

    def forward(self, x):
        x = self.groups(self.activation(self.whiten(x)))
        return self.head(F.adaptive_max_pool2d(x, 1).flatten(1)) * self.head_scale


# ---------------------------------------------------------------------------- data
class TrainBatches:
    """All training images as one uint8 tensor on the device, served in shuffled batches with
    the recipe's two augmentations applied to whole batches:
    alternating flip: each image is mirrored in every other epoch, from a random first epoch
      on (Jordan 2024's derandomised flip: every image is seen both ways in any two epochs);
    translation: shifted by up to `translate_px` whole pixels in x and y, the uncovered
      border black or mirrored (the package's batched translation, common.data.BatchAugment)."""

    def __init__(self, images, labels, batch_size, *, device, seed, translate_px,
                 translate_reflect=False):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.seed = batch_size, seed
        # (N, 1, 1, 1): each image's flip, broadcast over its pixels
        self.flip_phase = (torch.rand(len(labels), 1, 1, 1,
                                      generator=epoch_generator(seed, 99_991)) < 0.5).to(device)
        self.translate = BatchAugment(AugmentConfig(translate_px=translate_px,
                                                    translate_reflect=translate_reflect))

    def __len__(self):
        return len(self.labels) // self.batch_size  # the last incomplete batch is dropped

    def epoch(self, epoch):
        order = torch.randperm(len(self.labels), generator=epoch_generator(self.seed, epoch))
        for idx in order.to(self.labels.device).split(self.batch_size)[:len(self)]:
            images = self.images[idx]
            images = torch.where(self.flip_phase[idx] ^ bool(epoch % 2), images.flip(-1), images)
            yield (normalize(self.translate(images.float().div_(255)), SPEEDRUN_NORMALIZATION),
                   self.labels[idx])


def training_images(splits):
    """Every training image: the recipe has no validation split."""
    return (torch.cat([splits.train.images, splits.val.images]),
            torch.cat([splits.train.labels, splits.val.labels]))


def scoring_batches(splits, device):
    """The test images as the recipe scores them."""
    return TensorLoader(splits.test.images, splits.test.labels, EVAL_BATCH_SIZE, device=device,
                        train=False, normalization=SPEEDRUN_NORMALIZATION)


def check_batch_size(splits, cfg):
    """A batch larger than the training set would train on fewer images than it records."""
    n = len(splits.train) + len(splits.val)
    if cfg.batch_size > n:
        raise UserError(f"larger than the {n} training images", setting="batch_size",
                        value=cfg.batch_size)


# ---------------------------------------------------------------------------- training
@dataclass
class Optimizers:
    """Several optimizers stepped as one: the speed-run's Muon for the filters beside SGD for
    the rest. Each keeps its own schedule (a scheduler takes a single optimizer)."""
    optimizers: list

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none)

    def step(self):
        for o in self.optimizers:
            o.step()


def make_speedrun_optimizer(model, cfg):
    """Nesterov SGD (Jordan 2024), biases at bias_lr_scale times the rate; with
    filter_optimizer "muon", the conv filters (the model's `filter_matrices()`) are Muon's
    instead. PyTorch's weight_decay is multiplied by the (scheduled) rate, so setting it to
    decay / peak rate makes the decay per step the same in both groups and independent of the
    rate's size (it still follows the schedule, and passes through the momentum buffer, as in
    the published recipe: not AdamW-style decoupling from the gradient step)."""
    if cfg.filter_optimizer not in FILTER_OPTIMIZERS:
        raise ValueError(
            f"unknown filter optimizer {cfg.filter_optimizer!r}; choose from {FILTER_OPTIMIZERS}")
    muon = list(model.filter_matrices()) if cfg.filter_optimizer == "muon" else []
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and not any(p is m for m in muon):
            (biases if name.endswith("bias") else weights).append(p)
    groups = [dict(params=params, lr=lr, weight_decay=cfg.weight_decay / lr)
              for params, lr in ((weights, cfg.lr), (biases, cfg.lr * cfg.bias_lr_scale))]
    sgd = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    return Optimizers([sgd, make_muon(muon, cfg)] if muon else [sgd])


def make_muon(filters, cfg):
    """torch's Muon (2-D parameters: each filter bank as one (out, in x k x k) matrix), no
    weight decay. Its orthogonalised step has a fixed size, so the filters' norm alone would
    set the effective rate (BatchNorm follows each conv: only their direction matters); as in
    airbench94_muon, each matrix is rescaled to norm sqrt(rows) before every step, which holds
    that rate where the schedule puts it."""
    muon = torch.optim.Muon(filters, lr=cfg.muon_lr, momentum=cfg.muon_momentum,  # Nesterov's
                            weight_decay=0.0, ns_steps=cfg.muon_ns_steps)

    @torch.no_grad()
    def renormalize(*_):  # a step pre-hook: (optimizer, args, kwargs)
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

    def __init__(self, model, total_steps):
        # state_dict's tensors: detached, sharing the weights' and buffers' storage
        self.fast = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.clone() for t in self.fast]
        self.total = total_steps

    def pull(self, decay):
        for slow, fast in zip(self.slow, self.fast):
            slow.lerp_(fast, 1 - decay)
            fast.copy_(slow)

    def step(self, step):
        if step % self.every == 0:
            self.pull(self.decay * (step / self.total) ** 3)

    def finish(self):
        self.pull(1.0)


@torch.inference_mode()
def predict(model, x, tta_level):
    """Logits, averaged over test-time views: level 1 adds the mirror image; level 2 also the
    image shifted one pixel up-left and one down-right (each with its mirror), at half weight."""
    def with_flip(v):
        return model(v) if tta_level == 0 else 0.5 * (model(v) + model(v.flip(-1)))

    if tta_level < 2:
        return with_flip(x)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = padded[..., :-2, :-2], padded[..., 2:, 2:]  # up-left, down-right
    return 0.5 * with_flip(x) + 0.25 * sum(map(with_flip, shifted))


def prepare(splits, cfg, device, seed):
    """What training starts from: the batches, the network with its whitening fitted (and the
    seconds that took), the optimizers and their schedules."""
    check_batch_size(splits, cfg)
    seed_everything(seed)
    images, labels = training_images(splits)
    batches = TrainBatches(images, labels, cfg.batch_size, device=device, seed=seed,
                           translate_px=cfg.translate_px, translate_reflect=cfg.translate_reflect)
    model = SpeedrunNet(cfg)
    # the whitening fitted to a random sample (image folders list the images class by class)
    t0 = perf_counter()
    sample = torch.randperm(len(images), generator=generator(seed))[:cfg.whiten_images]
    model.init_whitening(normalize(images[sample], SPEEDRUN_NORMALIZATION, channels_last=False),
                         cfg.whiten_eps)
    whiten_time = perf_counter() - t0
    model.to(device, memory_format=torch.channels_last)  # in training mode
    optimizer = make_speedrun_optimizer(model, cfg)
    multiplier = WarmupLinear(cfg.epochs * len(batches), cfg.warmup, cfg.lr_start, cfg.lr_end)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, multiplier) for o in optimizer.optimizers]
    return batches, model, whiten_time, optimizer, schedulers


def _train_epoch(model, optimizer, schedulers, batches, epoch, cfg, device, precision, history,
                 lookahead, ema, progress):
    """One epoch's steps."""
    if epoch == cfg.whiten_bias_epochs:
        model.whiten.bias.requires_grad_(False)
    for x, y in batches.epoch(epoch):
        if epoch < cfg.low_res_epochs:
            x = F.interpolate(x, size=cfg.low_res_px, mode="bilinear", antialias=True)
        loss, correct = train_step(model, optimizer, x, y, device, precision, cfg.label_smoothing)
        for scheduler in schedulers:
            scheduler.step()
        history["step_loss"].append(loss)
        step = len(history["step_loss"])
        if lookahead:
            lookahead.step(step)
        if ema:
            ema.update_parameters(model)
        if not math.isfinite(loss):
            raise DivergenceError("training loss", loss, f"epoch {epoch + 1}, step {step}",
                                  lr=optimizer.param_groups[0]["lr"])
        progress.step(loss, correct, len(y))


def train_speedrun(splits, cfg, *, device, precision="fp32", seed=0, progress=False,
                   run_name="speedrun", monitor=True):
    """Train on all training images, score on test: (metrics with the history and confusion
    matrix, model). `monitor`: test accuracy each epoch (outside train_time_s, in wall_time_s)."""
    t_start = perf_counter()
    batches, model, whiten_time, optimizer, schedulers = prepare(splits, cfg, device, seed)
    test = scoring_batches(splits, device)
    lookahead = Lookahead(model, cfg.epochs * len(batches)) if cfg.lookahead else None
    history, train_time, ema = {"checks": [], "step_loss": []}, 0.0, None
    run_progress = Progress(run_name, cfg.epochs, len(batches),
                     {len(batches)} if monitor else set(),  # one check an epoch
                     len(test) * test.batch_size, cfg.batch_size, early_stopping=False,
                     say=progress or monitor, show_bar=progress)
    for epoch in range(cfg.epochs):
        t0 = perf_counter()
        last = epoch == cfg.epochs - 1
        if cfg.ema_epochs and epoch == max(cfg.epochs - cfg.ema_epochs, 0):
            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                use_buffers=True)  # BatchNorm's statistics too: no extra pass
        with run_progress.training(epoch):
            _train_epoch(model, optimizer, schedulers, batches, epoch, cfg, device, precision,
                         history, lookahead, ema, run_progress)
        if last and lookahead:
            lookahead.finish()
        if last and ema:
            model.load_state_dict(ema.module.state_dict())
        train_time += perf_counter() - t0
        train_loss, train_acc = run_progress.score()
        row = {"epoch": epoch + 1, "step": len(history["step_loss"]), "train_loss": train_loss,
               "train_accuracy": train_acc, "test_loss": float("nan"),
               "test_accuracy": float("nan"), "train_time_s": round(train_time, 2),
               "wall_time_s": round(perf_counter() - t_start, 2),
               "lr": optimizer.param_groups[0]["lr"]}
        if monitor or last:
            row["test_loss"], row["test_accuracy"] = evaluate(model, test, device, precision)
            run_progress.check_done()
        history["checks"].append(row)
        run_progress.log(row, seconds_key="train_time_s")
    t0, confusion = perf_counter(), empty_confusion()  # the final scoring, with TTA
    tta_loss, tta_acc = evaluate(model, test, device, precision, confusion=confusion,
                                 forward=lambda x: predict(model, x, cfg.tta_level))
    tta_time = perf_counter() - t0
    # recipe_time_s, what the recipe costs: whitening fit, training and the final scoring (the
    # per-epoch monitoring evaluations and data preparation aside)
    return {"run": run_name,
            "final": {"test": {"loss": row["test_loss"], "accuracy": row["test_accuracy"]},
                      "test_tta": {"loss": tta_loss, "accuracy": tta_acc}},
            "whiten_time_s": round(whiten_time, 2), "train_time_s": round(train_time, 2),
            "tta_time_s": round(tta_time, 2),
            "recipe_time_s": round(whiten_time + train_time + tta_time, 2),
            "wall_time_s": round(perf_counter() - t_start, 2), "epochs_completed": cfg.epochs,
            "precision": precision, "device": str(device), "seed": seed, "history": history,
            "confusion": confusion_rows(confusion)}, model


# ---------------------------------------------------------------------------- several seeds
def run_seeds(splits, config, seeds, *, root, device, precision, facts, progress=False,
              on_finished=None):
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
        if result:
            print(f"{root.name} seed {seed}: finished earlier, loaded from {run_dir.path}")
        else:
            result, model = train_speedrun(splits, seed_config.recipe, device=device,
                                           precision=precision, seed=seed, progress=progress,
                                           run_name=f"{root.name} seed {seed}")
            run_dir.create()
            seed_config.save(run_dir.path)
            result["config"] = seed_config.to_dict()  # as a seed loaded back has it
            run_dir.save_best(model.state_dict(), result["config"])
            run_dir.write_history(result["history"])
            run_dir.write(CONFUSION_NAME, result.pop("confusion"))
            run_dir.write(METRICS_NAME, {k: v for k, v in result.items() if k != "history"} | facts)
            if on_finished:
                on_finished(run_dir, result)
        runs[seed] = result
    summary = summarize(runs)
    save_json({"summary": summary, "config": config.to_dict(), "data_source": splits.source,
               "runs": {s: {k: v for k, v in r.items() if k != "history"}
                        for s, r in runs.items()}}, root / "results.json")
    return {"runs": runs, "summary": summary, "precision": precision}


def summarize(runs):
    """Mean, spread (sample standard deviation) and range of the accuracies and times."""
    def stats(values):
        values = list(values)
        return {"mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    rs = runs.values()
    return {"seeds": list(runs), "n": len(rs),
            "test_accuracy_tta": stats(100 * r["final"]["test_tta"]["accuracy"] for r in rs),
            "test_accuracy": stats(100 * r["final"]["test"]["accuracy"] for r in rs),
            "recipe_time_s": stats(r["recipe_time_s"] for r in rs),
            "wall_time_s": stats(r["wall_time_s"] for r in rs)}

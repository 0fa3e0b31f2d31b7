"""Where a speed-run step's time goes, and what a cheaper step could buy (issue 33, items 1-2).

Profiles a fixed number of training steps of our recipe (SPEEDRUN) and of our implementation at
the published airbench94_muon's shape (widths 64/256/256, batch 2,000: SpeedrunNet, not the
published script), then the final scoring with test-time augmentation, under torch.profiler
(CPU, record_shapes off), in the precision `auto` picks on this machine. Each step runs in
labelled regions (augment, forward_backward, optimizer_step, and Muon's newton_schulz inside
it), so the self time splits into convolutions, matmuls, BatchNorm, GELU, max-pool, the
optimizers, Newton-Schulz, augmentation, Python between operators and everything else.

Then the candidates that change only a step's cost (torch.compile, fewer Newton-Schulz
iterations, batch 1,024, widths 64/192/256, ...): each against the recipe's own step in
interleaved rounds (A then B, B then A, ...), the median and quartiles of the per-pair ratio,
and what that ratio could buy over the recipe's 11 epochs on the frontier of
results/task3e/speedrun_vs_published.json. Candidates whose share of the profile is too small
to pay are dropped without measuring, and say so.

  python -m bench.speedrun_profile --data-dir DIR --out-dir results/task3e/profile
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import _muon
from torch.profiler import ProfilerActivity, profile, record_function

from common import cli
from common.data import (SPEEDRUN_NORMALIZATION, TensorLoader, cifar10_splits, normalize,
                         resolve_data_dir)
from common.errors import UserError
from common.files import save_json
from common.recipes import SPEEDRUN, SpeedrunConfig, WarmupLinear
from common.speedrun import (EVAL_BATCH_SIZE, MatrixConv, SpeedrunNet, TrainBatches,
                             make_speedrun_optimizer, predict, training_images)
from common.system import autocast, generator, machine_record, seed_everything
from common.precision import choose_precision
from common.trainer import train_step

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
FRONTIER = ROOT / "results" / "task3e" / "speedrun_vs_published.json"

OURS = SPEEDRUN  # the recipe: widths 64/128/256, batch 512, 11 epochs
# our implementation at airbench94_muon's shape: its widths and batch (the rates scaled with
# the batch, which the cost does not depend on); not the published script
PUBLISHED_SHAPE = replace(SPEEDRUN, widths=(64, 256, 256)).with_batch_size(2000)

# the regions each profiled step is cut into (record_function labels)
AUGMENT, FORWARD_BACKWARD, OPTIMIZER_STEP, NEWTON_SCHULZ, READ_LOSS = (
    "augment", "forward_backward", "optimizer_step", "newton_schulz", "read_loss")
REGIONS = (AUGMENT, FORWARD_BACKWARD, OPTIMIZER_STEP, NEWTON_SCHULZ, READ_LOSS)
CATEGORIES = ("convolution", "matmul", "batch_norm", "gelu", "max_pool", "muon_newton_schulz",
              "optimizer_steps", "augmentation", "python_between_ops", "everything_else")
COMPUTE = ("convolution", "matmul", "muon_newton_schulz")  # FLOPs the math needs
ELEMENTWISE_LAYERS = ("batch_norm", "gelu", "max_pool")    # memory-bound, fusable
MATMUL_OPS = re.compile(r"^(aten::(mm|addmm|bmm|matmul|linear|baddbmm|addbmm)|(Mm|Addmm|Bmm)"
                        r"Backward\d*)$")

# a candidate whose whole target share of the step is below this cannot make a difference that
# 7 interleaved pairs on a shared machine resolve, let alone buy the 0.58 points: not measured
DROP_BELOW = 0.02
TTA_LEVEL = OURS.tta_level


# ---------------------------------------------------------------------------- the step
class NewtonSchulz:
    """torch.optim.Muon's orthogonalisation, labelled for the profiler. An optimizer that
    `reuse_every_other(muon)` registered gets, on every other step, each matrix's previous
    orthogonalised update instead of a new one (a candidate: it changes the math)."""

    def __init__(self, original):
        self.original, self.reusing, self.calls = original, None, 0

    def __call__(self, grad, *args, **kwargs):
        state = self.reusing
        if state is not None and state.skip:
            state.index += 1
            return state.previous[state.index - 1]
        with record_function(NEWTON_SCHULZ):
            self.calls += 1
            out = self.original(grad, *args, **kwargs)
        if state is not None:
            state.previous.append(out)
        return out

    def reuse_every_other(self, muon: torch.optim.Optimizer):
        state = _Reuse()

        def begin(optimizer, args, kwargs):
            state.skip, state.index = state.steps % 2 == 1, 0
            if not state.skip:
                state.previous = []
            self.reusing = state

        def end(optimizer, args, kwargs):
            self.reusing = None
            state.steps += 1
        muon.register_step_pre_hook(begin)
        muon.register_step_post_hook(end)


@dataclass
class _Reuse:
    steps: int = 0
    skip: bool = False
    index: int = 0
    previous: list | None = None


@contextlib.contextmanager
def labelled_newton_schulz():
    """Muon's Newton-Schulz function replaced by a labelled one for the duration."""
    ns = NewtonSchulz(_muon._zeropower_via_newtonschulz)
    _muon._zeropower_via_newtonschulz = ns
    try:
        yield ns
    finally:
        _muon._zeropower_via_newtonschulz = ns.original


class Side:
    """A network, its optimizers and schedules, and an endless stream of the recipe's augmented
    batches: what one training step needs, built as common.speedrun.train_speedrun builds it."""

    def __init__(self, cfg: SpeedrunConfig, images, labels, precision: str, seed: int = 0):
        seed_everything(seed)
        self.cfg, self.precision = cfg, precision
        self.batches = TrainBatches(images, labels, cfg.batch_size, device=CPU, seed=seed,
                                    translate_px=cfg.translate_px,
                                    translate_reflect=cfg.translate_reflect)
        if len(self.batches) == 0:  # the stream would wait forever for a first batch
            raise UserError(f"larger than the {len(labels)} training images",
                            setting="batch_size", value=cfg.batch_size)
        model = SpeedrunNet.from_config(cfg)
        sample = torch.randperm(len(images), generator=generator(seed))[:cfg.whiten_images]
        model.init_whitening(normalize(images[sample], SPEEDRUN_NORMALIZATION,
                                       channels_last=False), cfg.whiten_eps)
        self.model = model.to(CPU, memory_format=torch.channels_last).train()
        self.forward = self.model  # torch.compile replaces it (the parameters stay the model's)
        self.optimizer = make_speedrun_optimizer(self.model, cfg)
        multiplier = WarmupLinear(cfg.epochs * len(self.batches), cfg.warmup, cfg.lr_start,
                                  cfg.lr_end)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, multiplier)
                           for o in self.optimizer.optimizers]
        self.stream = self._forever()

    def _forever(self):
        epoch = 0
        while True:
            yield from self.batches.epoch(epoch)
            epoch += 1

    def step(self):
        """The recipe's step as common.speedrun.train_speedrun takes it: the next augmented
        batch, common.trainer.train_step, the schedules."""
        x, y = next(self.stream)
        train_step(self.forward, self.optimizer, x, y, CPU, self.precision,
                   self.cfg.label_smoothing)
        for scheduler in self.schedulers:
            scheduler.step()

    def profiled_step(self):
        """The same step, its parts in labelled regions (train_step's body, copied)."""
        with record_function(AUGMENT):
            x, y = next(self.stream)
        with record_function(FORWARD_BACKWARD):
            with autocast(CPU, self.precision):
                logits = self.forward(x)
                loss = F.cross_entropy(logits.float(), y,
                                       label_smoothing=self.cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function(OPTIMIZER_STEP):
            self.optimizer.step()
            for scheduler in self.schedulers:
                scheduler.step()
        with record_function(READ_LOSS):
            return loss.item(), (logits.argmax(1) == y).sum().item()


# ---------------------------------------------------------------------------- shares
def operator_class(name: str) -> str:
    low = name.lower()
    if "conv" in low:
        return "convolution"
    if MATMUL_OPS.match(name):
        return "matmul"
    if "batch_norm" in low or "batchnorm" in low:
        return "batch_norm"
    if "gelu" in low:
        return "gelu"
    if "max_pool" in low or "maxpool" in low:
        return "max_pool"
    return "everything_else"


def category(name: str, regions: set[str]) -> str:
    """Where one event's self time goes: by the region it ran in, then by the operator."""
    if AUGMENT in regions:
        return "augmentation"
    if NEWTON_SCHULZ in regions:
        return "muon_newton_schulz"
    if OPTIMIZER_STEP in regions:
        return "optimizer_steps"
    if name in REGIONS:  # a region's own time, outside every operator: Python, dispatch
        return "python_between_ops"
    return operator_class(name)


def _regions_of(event) -> set[str]:
    regions, e = set(), event
    while e is not None:
        if e.name in REGIONS:
            regions.add(e.name)
        e = e.cpu_parent
    return regions


def _layer_of(event) -> str:
    """The name that classifies an event: its own, or, for a generic one (a fill, a copy, an
    allocation), the nearest enclosing operator's that names a layer (max-pool's backward
    zero-fills its gradient; a convolution reorders its inputs), up to the region."""
    e = event
    while e is not None and e.name not in REGIONS:
        if operator_class(e.name) != "everything_else":
            return e.name
        e = e.cpu_parent
    return event.name


def shares(events) -> dict:
    """Self CPU time (seconds) and share of the total per category, the matmuls inside
    Newton-Schulz apart, and each region's inclusive time."""
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    ns_matmul = 0.0
    regions_s = dict.fromkeys(REGIONS, 0.0)
    for e in events:
        self_s = e.self_cpu_time_total / 1e6
        regions = _regions_of(e)
        cat = category(e.name if e.name in REGIONS else _layer_of(e), regions)
        seconds[cat] += self_s
        if cat == "muon_newton_schulz" and MATMUL_OPS.match(e.name):
            ns_matmul += self_s
        if e.name in REGIONS:
            regions_s[e.name] += e.cpu_time_total / 1e6
    total = sum(seconds.values()) or 1.0
    compute = sum(seconds[c] for c in ("convolution", "matmul")) + ns_matmul
    layers = sum(seconds[c] for c in ELEMENTWISE_LAYERS)
    return {"self_seconds": {k: round(v, 6) for k, v in seconds.items()},
            "share": {k: round(v / total, 4) for k, v in seconds.items()},
            "newton_schulz_matmul_seconds": round(ns_matmul, 6),
            "groups": {"compute (convolutions, matmuls incl. Newton-Schulz's)":
                       round(compute / total, 4),
                       "elementwise layers (BatchNorm, GELU, max-pool)": round(layers / total, 4),
                       "overhead and the rest (augmentation, optimizer updates, Newton-Schulz's "
                       "non-matmul ops, casts, copies, allocation, Python)":
                       round(1 - (compute + layers) / total, 4)},
            "total_self_seconds": round(total, 6),
            "region_seconds": {k: round(v, 6) for k, v in regions_s.items()}}


def conv_flops_per_image(model: SpeedrunNet) -> tuple[float, float]:
    """(forward, training) FLOPs of the convolutions for one 32x32 image: training is the
    forward plus, for each trained filter bank, the input's and the filters' gradients (the
    frozen whitening layer: its forward only)."""
    found = []

    def hook(module, inputs, out):
        found.append((module, out.shape[-2] * out.shape[-1]))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, MatrixConv))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    forward = training = 0.0
    for module, positions in found:
        flops = 2.0 * module.weight.numel() * positions
        forward += flops
        training += flops * (3 if isinstance(module, MatrixConv) else 1)
    return forward, training


GEMM_SIZE = 2048  # the matmul's side: large enough for a ceiling (tests shrink it: a bf16 one
#                   takes over a minute on a CPU without bf16 instructions)


def gemm_rate(dtype, repeats: int = 7) -> float:
    """GFLOP/s of one large square matmul on this machine, the best of `repeats` (the least
    disturbed on a shared machine): a ceiling the convolutions can be compared with."""
    n = GEMM_SIZE
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


# ---------------------------------------------------------------------------- profiling
def profile_training(side: Side, steps: int, warmup: int = 1):
    """(profiler, seconds per profiled step): `warmup` steps first, outside the profile (the
    first call's one-off costs), then `steps` under it."""
    for _ in range(warmup):
        side.profiled_step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            side.profiled_step()
        seconds = time.perf_counter() - t0
    return prof, seconds / steps


def profile_scoring(model: nn.Module, images, labels, precision: str):
    """(profiler, seconds): the final scoring at the recipe's TTA level over these images, in
    the recipe's evaluation batches."""
    loader = TensorLoader(images, labels, EVAL_BATCH_SIZE, device=CPU, train=False,
                          normalization=SPEEDRUN_NORMALIZATION)
    model.eval()
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            t0 = time.perf_counter()
            for x, _ in loader:
                with autocast(CPU, precision):
                    predict(model, x, TTA_LEVEL).float()
            seconds = time.perf_counter() - t0
    finally:
        model.train()
    return prof, seconds


def top_table(prof) -> str:
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)


# ---------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    changes_math: str          # "" when the step computes the same thing
    per_image: bool = False    # another batch: compare the cost per image, not per step
    targets: tuple = ()        # the profile's categories it can shrink (drop rule)
    removes: float = 1.0       # at most this fraction of those categories


CANDIDATES = {c.name: c for c in (
    Candidate("compile", "torch.compile (inductor) of the network: its forward and, through "
              "AOTAutograd, its backward; the optimizers stay eager", ""),
    Candidate("ns_steps_2", "Muon's Newton-Schulz in 2 iterations instead of 3",
              "a less exact orthogonalisation", targets=("muon_newton_schulz",), removes=1 / 3),
    Candidate("ns_every_other_step", "Muon's Newton-Schulz every other step; between, each "
              "matrix's previous orthogonalised update again",
              "every other update is the previous step's direction",
              targets=("muon_newton_schulz",), removes=1 / 2),
    Candidate("gelu_tanh", "GELU's tanh approximation instead of the exact erf form",
              "a slightly different activation", targets=("gelu",), removes=1.0),
    Candidate("other_precision", "the precision `auto` did not pick for the recipe (bf16 "
              "autocast where it picked fp32, fp32 where it picked bf16)",
              "bf16 rounding in the forward, or its absence"),
    Candidate("batch_1024", "batch 1,024 (the rates scaled as with_batch_size does)",
              "half the steps per epoch", per_image=True),
    Candidate("widths_64_192_256", "widths 64/192/256 instead of 64/128/256",
              "a wider second group (more compute per image)"),
)}


def candidate_config(name: str) -> SpeedrunConfig:
    if name == "ns_steps_2":
        return replace(OURS, muon_ns_steps=2)
    if name == "batch_1024":
        return OURS.with_batch_size(1024)
    if name == "widths_64_192_256":
        return replace(OURS, widths=(64, 192, 256))
    return OURS


def build_candidate(name: str, images, labels, precision: str, ns: NewtonSchulz) -> Side:
    if name == "other_precision":
        precision = {"fp32": "bf16", "bf16": "fp32"}[precision]
    side = Side(candidate_config(name), images, labels, precision, seed=1)
    if name == "compile":
        side.forward = torch.compile(side.model)
    elif name == "ns_every_other_step":
        ns.reuse_every_other(side.optimizer.optimizers[-1])  # Muon: make_speedrun_optimizer's last
    elif name == "gelu_tanh":
        for module in side.model.modules():
            if isinstance(module, nn.GELU):
                module.approximate = "tanh"
    return side


def quartiles(values) -> tuple[float, float, float]:
    values = sorted(values)
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def timed(side: Side, steps: int) -> float:
    """Seconds per image over `steps` steps of this side."""
    t0 = time.perf_counter()
    for _ in range(steps):
        side.step()
    return (time.perf_counter() - t0) / (steps * side.cfg.batch_size)


def measure_candidates(recipe: Side, candidates: dict[str, Side], rounds: int,
                       steps_per_turn: int, say) -> dict:
    """Interleaved rounds: in each, every candidate and the recipe in turn (the recipe first
    in even rounds, second in odd ones), `steps_per_turn` steps each; the per-pair ratio is
    the candidate's time per image over the recipe's."""
    pairs = {name: [] for name in candidates}
    recipe_s = []
    for r in range(rounds):
        for name, side in candidates.items():
            if r % 2 == 0:
                a = timed(recipe, steps_per_turn)
                b = timed(side, steps_per_turn)
            else:
                b = timed(side, steps_per_turn)
                a = timed(recipe, steps_per_turn)
            pairs[name].append((a, b))
            recipe_s.append(a * recipe.cfg.batch_size)
        say(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {p[-1][1] / p[-1][0]:.3f}" for n, p in pairs.items()))
    return {"pairs": pairs, "recipe_step_s": recipe_s}


# ---------------------------------------------------------------------------- the frontier
def frontier_slope(path: Path = FRONTIER) -> dict:
    """The end of our frontier (accuracy with TTA against recipe time, 8 and 11 epochs), the
    recipe's 11-epoch training time and the gap to the published script, from the committed
    side-by-side (its machine's seconds)."""
    data = json.loads(path.read_text())
    ours = {p["epochs"]: p for p in data["frontier"]["ours"]}
    end, before = ours[11], ours[8]
    folder = ROOT / end["folder"]
    train_s = statistics.fmean(json.loads((folder / f"seed{s}" / "metrics.json").read_text())
                               ["train_time_s"] for s in data["ours"]["seeds"])
    slope = (end["test_acc_tta"] - before["test_acc_tta"]) / (end["seconds"] - before["seconds"])
    gap = data["published"]["test_acc_tta"] - end["test_acc_tta"]
    return {"source": str(path.relative_to(ROOT)), "machine": data["machine"],
            "points_per_second": slope, "train_time_11_epochs_s": train_s, "gap_points": gap,
            "seconds_to_close_gap": gap / slope,
            # fitting gap / slope more seconds of training into train_s takes steps of
            # train_s / (train_s + gap / slope) of their time (not 1 - (gap / slope) / train_s)
            "step_ratio_to_close_gap": train_s / (train_s + gap / slope)}


# ---------------------------------------------------------------------------- main
class Printer:
    """print(), and the same lines kept for the output folder's report.txt."""

    def __init__(self):
        self.lines = []

    def __call__(self, text: str = ""):
        print(text, flush=True)
        self.lines.append(text)


def precision_for(cfg: SpeedrunConfig, requested: str):
    return choose_precision(requested, CPU, lambda: SpeedrunNet.from_config(cfg),
                            cfg.batch_size)


TITLES = {"ours": "our recipe (SPEEDRUN: widths 64/128/256, batch 512)",
          "published_shape": "our implementation at the published airbench94_muon's shape "
                             "(widths 64/256/256, batch 2,000; SpeedrunNet, not the published "
                             "script)"}
UNTRIED = {"ema": "weight averaging of the last epochs changes the accuracy, not a step's cost: "
                  "it needs training runs (3 seeds at 11 epochs), not a step benchmark"}


def parse_args(argv):
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (as every script takes it)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="write the tables and JSON here (e.g. results/task3e/profile)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--steps", type=cli.whole_number(1), default=20,
                   help="profiled training steps of our recipe (batch 512)")
    p.add_argument("--published-steps", type=cli.whole_number(1), default=5,
                   help="profiled steps at the published shape (batch 2,000: 5 = 10,000 images)")
    p.add_argument("--tta-images", type=cli.whole_number(1), default=2000,
                   help="test images the profiled final scoring covers")
    p.add_argument("--rounds", type=cli.whole_number(1), default=7)
    p.add_argument("--steps-per-turn", type=cli.whole_number(1), default=2)
    p.add_argument("--candidates", default=",".join(CANDIDATES), metavar="A,B,...",
                   help=f"from {', '.join(CANDIDATES)}")
    p.add_argument("--candidates-only", action="store_true",
                   help="no profiles: measure the candidates against the recipe in the "
                        "precision and with the shares (the drop rule's) of an earlier full "
                        "run's OUT_DIR/shares.json; writes step_candidates_<names>.json and "
                        "report_<names>.txt beside it")
    args = p.parse_args(argv)
    args.names = [n for n in args.candidates.split(",") if n]
    for name in args.names:
        if name not in CANDIDATES:
            raise UserError(f"choose from {', '.join(CANDIDATES)}", setting="candidates",
                            value=name)
    args.earlier = None
    if args.candidates_only:
        if args.out_dir is None:
            raise UserError("--candidates-only reads an earlier run's shares.json from it",
                            setting="out_dir", value="(none)")
        try:
            args.earlier = json.loads((args.out_dir / "shares.json").read_text())
            args.earlier["sides"]["ours"]["training"]["share"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"no full run's shares.json there ({type(err).__name__})",
                            setting="out_dir", value=args.out_dir) from None
    return args


def profile_side(key: str, cfg: SpeedrunConfig, steps: int, data: dict, gemm: dict, args,
                 say) -> dict:
    """Profile `steps` training steps and the TTA scoring of one side; print the tables and
    shares, write the tables to --out-dir; its entry of shares.json."""
    choice = precision_for(cfg, args.precision)
    say(f"\n== {TITLES[key]}\nprecision {choice.precision}: {choice.reason}")
    side = Side(cfg, data["images"], data["labels"], choice.precision)
    prof, step_s = profile_training(side, steps)
    table, split = top_table(prof), shares(prof.events())
    fwd_flops, train_flops = conv_flops_per_image(side.model)
    conv_rate = train_flops * cfg.batch_size * steps / max(
        split["self_seconds"]["convolution"], 1e-9) / 1e9
    tprof, tta_s = profile_scoring(side.model, data["tta_images"], data["tta_labels"],
                                   choice.precision)
    ttable, tsplit = top_table(tprof), shares(tprof.events())
    per_epoch, n_tta = len(side.batches), len(data["tta_labels"])
    say(f"{steps} steps of batch {cfg.batch_size} under the profiler (after 1 unprofiled), "
        f"{step_s:.2f} s a step: one epoch of {per_epoch} steps would be about "
        f"{step_s * per_epoch:.0f} s here ({step_s / cfg.batch_size * 1e3:.2f} ms an image)")
    say(table)
    say(format_shares(split))
    say(f"convolutions: {train_flops / 1e6:.0f} MFLOP an image in training "
        f"({fwd_flops / 1e6:.0f} forward), run at {conv_rate:.0f} GFLOP/s (their self time), "
        f"against the {GEMM_SIZE} x {GEMM_SIZE} {choice.precision} matmul's "
        f"{gemm[choice.precision]:.0f} GFLOP/s")
    say(f"-- final scoring, TTA level {TTA_LEVEL} (6 views) over {n_tta} test images: "
        f"{tta_s:.1f} s, {tta_s / n_tta * 1e3:.2f} ms an image (x {data['test_images']} test "
        f"images: about {tta_s / n_tta * data['test_images']:.0f} s)")
    say(ttable)
    say(format_shares(tsplit))
    if args.out_dir is not None:
        header = (f"{TITLES[key]}\n{say.lines[1]}\nprecision {choice.precision} "
                  f"({choice.reason})\n{steps} training steps of batch {cfg.batch_size} (after "
                  f"1 unprofiled step), {step_s:.2f} s a step under the profiler; self CPU "
                  f"time, top 30 operators:\n")
        (args.out_dir / f"profile_{key}.txt").write_text(header + table + "\n")
        (args.out_dir / f"profile_tta_{key}.txt").write_text(
            f"{TITLES[key]}\n{say.lines[1]}\nfinal scoring, TTA level {TTA_LEVEL}, {n_tta} "
            f"test images (seeded sample), batches of {EVAL_BATCH_SIZE}, {choice.precision}: "
            f"{tta_s:.1f} s\n" + ttable + "\n")
    return {"what": TITLES[key], "widths": list(cfg.widths), "batch_size": cfg.batch_size,
            "precision": choice.precision, "precision_reason": choice.reason,
            "profiled_steps": steps, "steps_per_epoch": per_epoch,
            "seconds_per_profiled_step": round(step_s, 3),
            "ms_per_image": round(step_s / cfg.batch_size * 1e3, 3), "training": split,
            "conv_mflop_per_image": {"forward": round(fwd_flops / 1e6, 1),
                                     "training": round(train_flops / 1e6, 1)},
            "conv_gflops_achieved": round(conv_rate, 1),
            "tta_scoring": {"images": n_tta, "seconds": round(tta_s, 2),
                            "ms_per_image": round(tta_s / n_tta * 1e3, 3), **tsplit}}


def prepare_candidates(names, recipe_split: dict, data: dict, precision: str,
                       ns: NewtonSchulz, say) -> tuple[dict, dict]:
    """(report, measured): each candidate dropped by the profile's bound, failed (the error's
    first line), or built and stepped twice (the first step compiles, for "compile")."""
    report, measured = {}, {}
    for name in names:
        c = CANDIDATES[name]
        entry = report[name] = {"description": c.description, "changes_math": c.changes_math}
        bound = sum(recipe_split[t] for t in c.targets) * c.removes if c.targets else None
        if bound is not None and bound < DROP_BELOW:
            entry["dropped"] = (f"the profile gives it at most {bound:.1%} of the step "
                                f"({' + '.join(c.targets)} x {c.removes:.2f}), below "
                                f"{DROP_BELOW:.0%}: it cannot pay")
            say(f"{name}: dropped, {entry['dropped']}")
            continue
        try:
            side = build_candidate(name, data["images"], data["labels"], precision, ns)
            t0 = time.perf_counter()
            side.step()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            side.step()
            second = time.perf_counter() - t0
        except RuntimeError as err:  # torch's refusal of a candidate is a finding, not a crash
            entry["failed"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
            say(f"{name}: failed, {entry['failed']}")
            continue
        measured[name] = side
        entry.update({"per_image": c.per_image, "first_step_s": round(first, 2),
                      "second_step_s": round(second, 2)})
        if bound is not None:
            entry["profile_bound"] = round(bound, 4)
        say(f"{name}: first step {first:.1f} s, second {second:.2f} s")
    return report, measured


def score_candidates(timings: dict, report: dict, frontier: dict, recipe_steps: int,
                     precision: str, say) -> float:
    """Each measured candidate's ratio (median, quartiles) and what it could buy, into its
    report entry; returns the recipe's median step time."""
    recipe_step = statistics.median(timings["recipe_step_s"])
    for name, pairs in timings["pairs"].items():
        ratios = [b / a for a, b in pairs]
        low, mid, high = quartiles(ratios)
        saved_here = (1 - mid) * recipe_steps * recipe_step
        saved_there = (1 - mid) * frontier["train_time_11_epochs_s"]
        entry = report[name]
        if name == "compile":
            entry["compile_s"] = round(entry["first_step_s"] - mid * recipe_step, 1)
        per_image = CANDIDATES[name].per_image
        entry.update({
            "ratio_per_image" if per_image else "ratio_per_step":
                {"median": round(mid, 3), "q1": round(low, 3), "q3": round(high, 3),
                 "pairs": len(ratios), "all": [round(r, 3) for r in ratios]},
            "seconds_saved_11_epochs_here": round(saved_here, 1),
            "seconds_saved_11_epochs_frontier_machine": round(saved_there, 1),
            "points_it_could_buy": round(saved_there * frontier["points_per_second"], 2)})
        say(f"{name}: {'per-image' if per_image else 'step'} ratio {mid:.3f} (middle half "
            f"{low:.3f}-{high:.3f}, {len(ratios)} pairs); over the recipe's {recipe_steps} "
            f"steps {saved_here:+.0f} s here, {saved_there:+.0f} s on the frontier's machine, "
            f"about {entry['points_it_could_buy']:+.2f} points at the frontier's end"
            + (f"; compile {entry['compile_s']:.0f} s once" if "compile_s" in entry else ""))
    say(f"the recipe's step here: {recipe_step:.2f} s (median of "
        f"{len(timings['recipe_step_s'])} turns, {precision})")
    return recipe_step


def load_data(args) -> dict:
    splits = cifar10_splits(resolve_data_dir(args.data_dir), seed=0, download=False,
                            progress=False)
    images, labels = training_images(splits)
    for cfg in (OURS, PUBLISHED_SHAPE):
        if cfg.batch_size > len(labels):
            raise UserError(f"larger than the {len(labels)} training images",
                            setting="batch_size", value=cfg.batch_size)
    pick = torch.randperm(len(splits.test.labels), generator=generator(0))[:args.tta_images]
    return {"images": images, "labels": labels, "tta_images": splits.test.images[pick],
            "tta_labels": splits.test.labels[pick], "test_images": len(splits.test.labels)}


def candidates_section(args, result: dict, data: dict, ns: NewtonSchulz, say) -> dict:
    """The candidates against the recipe's step: step_candidates.json's content."""
    say("\n== candidates: each against the recipe's step, interleaved rounds")
    if args.earlier:
        say(f"the recipe's shares and precision ({result['sides']['ours']['precision']}) from "
            f"the full run of {result['started']} ({args.out_dir / 'shares.json'})")
    precision = result["sides"]["ours"]["precision"]
    frontier = frontier_slope()
    say(f"the frontier ({frontier['source']}, on {frontier['machine']['cpu']}): the last "
        f"epochs bought {frontier['points_per_second'] * 100:.2f} points per 100 s; the "
        f"recipe trains 11 epochs in {frontier['train_time_11_epochs_s']:.0f} s there; the "
        f"{frontier['gap_points']:.2f} points to the published script would take "
        f"{frontier['seconds_to_close_gap']:.0f} s more at that rate, a step ratio of "
        f"{frontier['step_ratio_to_close_gap']:.2f} at the same time")
    report, measured = prepare_candidates(args.names, result["sides"]["ours"]["training"]
                                          ["share"], data, precision, ns, say)
    recipe = Side(OURS, data["images"], data["labels"], precision, seed=2)
    recipe.step()
    recipe_step = None
    if measured:
        timings = measure_candidates(recipe, measured, args.rounds, args.steps_per_turn, say)
        recipe_step = round(score_candidates(
            timings, report, frontier, OURS.epochs * (len(data["labels"]) // OURS.batch_size),
            precision, say), 3)
    return {"command": say.lines[0], "machine": result["machine"], "precision": precision,
            "rounds": args.rounds, "steps_per_turn": args.steps_per_turn,
            "drop_below": DROP_BELOW, "frontier": frontier,
            "recipe_step_s_median": recipe_step, "candidates": report, "untried": UNTRIED}


@cli.exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    say = Printer()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = machine_record(CPU)
    say(f"python -m bench.speedrun_profile {' '.join(argv if argv is not None else sys.argv[1:])}")
    say(f"started {started}; CPU: {machine['cpu']} ({machine['vendor']} family "
        f"{machine['family']} model {machine['model']} stepping {machine['stepping']}), flags "
        f"{machine['flags']}, {machine['threads']} threads, torch {machine['torch']}")
    data = load_data(args)
    with labelled_newton_schulz() as ns:
        if args.earlier:
            result = args.earlier
        else:
            gemm = {"fp32": gemm_rate(torch.float32), "bf16": gemm_rate(torch.bfloat16)}
            say(f"a {GEMM_SIZE} x {GEMM_SIZE} matmul here: fp32 {gemm['fp32']:.0f} GFLOP/s, bf16 "
                f"{gemm['bf16']:.0f} GFLOP/s (best of 7)")
            result = {"command": say.lines[0], "started": started, "machine": machine,
                      "gemm_gflops": {k: round(v, 1) for k, v in gemm.items()}, "sides": {}}
            for key, cfg, steps in (("ours", OURS, args.steps),
                                    ("published_shape", PUBLISHED_SHAPE, args.published_steps)):
                result["sides"][key] = profile_side(key, cfg, steps, data, gemm, args, say)
        candidates = candidates_section(args, result, data, ns, say)
    candidates["machine"] = machine
    if args.out_dir is not None:
        suffix = "_" + "_".join(args.names) if args.earlier else ""
        if not args.earlier:
            result["recipe_step_s_median"] = candidates["recipe_step_s_median"]
            save_json(result, args.out_dir / "shares.json")
        save_json(candidates, args.out_dir / f"step_candidates{suffix}.json")
        (args.out_dir / f"report{suffix}.txt").write_text("\n".join(say.lines) + "\n")


def format_shares(split: dict) -> str:
    total = split["total_self_seconds"]
    rows = [f"self time {total:.2f} s; by category:"]
    for cat in CATEGORIES:
        if split["self_seconds"][cat]:
            rows.append(f"  {cat:<22} {split['share'][cat]:6.1%}  {split['self_seconds'][cat]:8.2f} s")
    if split["newton_schulz_matmul_seconds"]:
        rows.append(f"  (of Newton-Schulz: matmuls {split['newton_schulz_matmul_seconds']:.3f} s)")
    rows += [f"  {group}: {share:.1%}" for group, share in split["groups"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    main()

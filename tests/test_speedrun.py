"""The speed-run recipe (task3e.py --recipe speedrun): its parts, and the script end to end."""
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from common.data import cifar10_splits
from common.data import SPEEDRUN_NORMALIZATION, normalize
from common.recipes import SPEEDRUN, SpeedrunConfig, WarmupLinear
from common.speedrun import (Lookahead, MatrixConv, SpeedrunNet, TrainBatches, make_muon,
                             make_speedrun_optimizer,
                             patches, predict, train_speedrun,
                             whitening_filters)
from conftest import load_script

task3e = load_script("task3e")


def correlated_images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    x[:, 1] += 0.9 * x[:, 0]                        # correlated channels
    x[:, :, :, 1:] += 0.7 * x[:, :, :, :-1].clone()  # correlated neighbouring pixels
    return x + 0.5


def test_whitening_layer_maps_patches_to_identity_covariance():
    x = correlated_images()
    weight, bias = whitening_filters(x, size=2, eps=1e-6)
    assert weight.shape == (24, 3, 2, 2)
    out = F.conv2d(x, weight, bias)                       # (N, 24, 15, 15)
    rows = out.permute(0, 2, 3, 1).reshape(-1, 24).double()
    half = rows[:, :12]
    assert torch.cov(half.T) == pytest.approx(torch.eye(12, dtype=torch.double), abs=1e-2)
    assert half.mean(0).abs().max() < 1e-3                 # the bias centres them
    assert torch.allclose(rows[:, 12:], -half, atol=1e-5)  # the second half: the same, negated
    # the input was far from white: the check is not trivially true
    raw = torch.cov(patches(x, 2).T.double())
    assert (raw - torch.eye(12, dtype=torch.double)).abs().max() > 0.5


def test_network_freezes_whitening_weights_and_batchnorm_scale_and_starts_as_identity():
    net = SpeedrunNet(widths=(16, 32, 32))
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 6 and all(not m.weight.requires_grad and m.bias.requires_grad for m in bns)
    second_conv = net.groups[0][4]                         # 16 -> 16: an identity at start
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(second_conv(x), x, atol=1e-6)


def test_schedule_warms_up_then_decays_linearly():
    multiplier = WarmupLinear(100, warmup=0.25, start=0.2, end=0.1)
    assert multiplier(0) == pytest.approx(0.2)
    assert multiplier(25) == pytest.approx(1.0)
    assert multiplier(100) == pytest.approx(0.1)
    assert multiplier(60) < multiplier(40)


def test_alternating_flip_flips_each_image_in_every_other_epoch():
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)  # the label identifies the image
    batches = TrainBatches(images, labels, 10, device="cpu", seed=0, translate_px=0)

    def flipped(epoch):
        out = {}
        for x, y in batches.epoch(epoch):
            for img, i in zip(x, y):
                original = normalize(images[i:i + 1], SPEEDRUN_NORMALIZATION)[0]
                out[int(i)] = not torch.allclose(img, original)
                assert torch.allclose(img, original.flip(-1) if out[int(i)] else original)
        return out

    e0, e1, e2 = flipped(0), flipped(1), flipped(2)
    assert len(e0) == 40 and 5 < sum(e0.values()) < 35    # every image, a random half flipped
    assert all(e1[i] != e0[i] for i in e0) and e2 == e0


def test_translation_shifts_whole_batches_by_at_most_the_configured_pixels():
    images = torch.randint(1, 256, (30, 3, 8, 8), dtype=torch.uint8)  # no black pixel
    batches = TrainBatches(images, torch.arange(30), 30, device="cpu", seed=0, translate_px=2)
    torch.manual_seed(0)
    (x, y), = list(batches.epoch(1))
    black = normalize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), SPEEDRUN_NORMALIZATION)[0, :, 0, 0]
    border = (x == black.view(3, 1, 1)).all(1)             # (N, H, W): uncovered pixels
    rows, cols = border.all(2).sum(1), border.all(1).sum(1)  # black rows / columns per image
    assert rows.max() <= 2 and cols.max() <= 2 and (rows + cols).sum() > 0


def test_reflect_translation_leaves_no_black_border_and_shifts_whole_pixels():
    images = torch.randint(1, 256, (30, 3, 8, 8), dtype=torch.uint8)
    batches = TrainBatches(images, torch.arange(30), 30, device="cpu", seed=0, translate_px=2,
                           translate_reflect=True)
    torch.manual_seed(0)
    (x, y), = list(batches.epoch(0))
    originals = normalize(images, SPEEDRUN_NORMALIZATION)
    black = normalize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), SPEEDRUN_NORMALIZATION)[0, :, 0, 0]
    assert not (x == black.view(3, 1, 1)).all(1).any()
    shifted = 0
    for img, i in zip(x, y):
        source = originals[i].flip(-1) if not any(
            torch.allclose(img[:, 2:6, 2:6], originals[i][:, 2 + a:6 + a, 2 + b:6 + b], atol=1e-4)
            for a in range(-2, 3) for b in range(-2, 3)) else originals[i]
        offsets = [(a, b) for a in range(-2, 3) for b in range(-2, 3)
                   if torch.allclose(img[:, 2:6, 2:6], source[:, 2 + a:6 + a, 2 + b:6 + b],
                                     atol=1e-4)]
        assert offsets, "the middle of every image is the original shifted by whole pixels"
        shifted += offsets[0] != (0, 0)
    assert shifted > 10


class FlipSymmetric(torch.nn.Module):
    """Any net made invariant under horizontal flips."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + self.net(x.flip(-1))


@torch.inference_mode()
def test_test_time_augmentation_properties():
    """What TTA must do, whatever its weights: level 1 treats an image and its mirror alike;
    a flip-invariant net scores the same with and without it; an image that flips and shifts
    leave unchanged (one colour) scores the same at every level; level 2 uses other views."""
    torch.manual_seed(0)
    net = SpeedrunNet(widths=(8, 8, 8)).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(predict(net, x, 1), predict(net, x.flip(-1), 1), atol=1e-5)
    symmetric = FlipSymmetric(net)
    assert torch.allclose(predict(symmetric, x, 1), predict(symmetric, x, 0), atol=1e-5)
    plain = torch.rand(4, 3, 1, 1).expand(4, 3, 32, 32).contiguous()
    for level in (0, 1, 2):
        assert torch.allclose(predict(net, plain, level), net(plain), atol=1e-5), level
    assert not torch.allclose(predict(net, x, 2), predict(net, x, 1), atol=1e-4)


def decay_of_one_step(cfg: SpeedrunConfig) -> dict[str, float]:
    """Per group, the fraction a weight loses in one step with no gradient: the decay alone."""
    torch.manual_seed(0)
    net = SpeedrunNet(widths=(8, 8, 8))
    optimizer = make_speedrun_optimizer(net, cfg)
    groups = {"weights": optimizer.param_groups[0]["params"][0],
              "biases": optimizer.param_groups[1]["params"][0]}
    with torch.no_grad():
        for p in groups.values():
            p.fill_(1.0)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return {name: 1.0 - p.flatten()[0].item() for name, p in groups.items()}


def test_optimizer_groups_and_a_decay_per_step_that_no_rate_changes():
    net = SpeedrunNet(widths=(8, 8, 8))
    cfg = SpeedrunConfig(lr=0.5, bias_lr_scale=64, weight_decay=1e-3)
    weights, biases = make_speedrun_optimizer(net, cfg).param_groups
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert {id(p) for g in (weights, biases) for p in g["params"]} == trainable
    assert id(net.whiten.weight) not in trainable
    assert biases["lr"] == 64 * weights["lr"] and weights["nesterov"]
    # the weight decay of a step is the same for weights and biases, whatever the peak rate
    slow, fast = (decay_of_one_step(SpeedrunConfig(lr=lr, weight_decay=1e-3)) for lr in (0.5, 4))
    assert slow["weights"] > 0
    assert slow["weights"] == pytest.approx(slow["biases"], rel=1e-4)
    assert fast == pytest.approx(slow, rel=1e-4)


def muon_update(gradient: torch.Tensor, lr: float = 0.5) -> torch.Tensor:
    """The step the speed-run's Muon takes for this gradient of a filter matrix, with no
    momentum: what it subtracts from the (renormalised) weights, per unit of rate."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(gradient.shape))
    muon = make_muon([weight], SpeedrunConfig(muon_lr=lr, muon_momentum=0.0))
    weight.grad = gradient.clone()
    with torch.no_grad():
        before = weight * len(weight) ** 0.5 / weight.norm()  # the rescaling it does first
    muon.step()
    return (before - weight.detach()) / lr


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), aspect=st.integers(2, 9), seed=st.integers(0, 2**16),
       log_scale=st.floats(-4, 4))
def test_muon_update_is_orthogonal_whatever_the_gradient(rows, aspect, seed, log_scale):
    """Filter banks as Muon sees them (out x in*3*3, at least twice as wide as tall): whatever
    the gradient's values and size, the update is close to an orthogonal matrix (every
    singular value near one) and depends on the gradient's direction only."""
    g = torch.randn(rows, rows * aspect, generator=torch.Generator().manual_seed(seed))
    update = muon_update(g * 10.0 ** log_scale)
    singular = torch.linalg.svdvals(update)
    assert singular.min() > 0.5 and singular.max() < 1.5, singular
    unscaled = muon_update(g)  # the same direction, up to the bf16 rounding it iterates in
    assert F.cosine_similarity(update.flatten(), unscaled.flatten(), dim=0) > 0.97
    assert torch.allclose(muon_update(g, lr=0.1), unscaled, atol=1e-3)  # a step of `lr` exactly


def test_muon_holds_each_filter_matrix_at_norm_sqrt_rows():
    net = SpeedrunNet(widths=(8, 16, 16))
    optimizer = make_speedrun_optimizer(net, SpeedrunConfig(filter_optimizer="muon"))
    for p in net.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    for _ in range(3):
        optimizer.step()
    for p in net.filter_matrices():  # rescaled before the step, which then moves it
        assert p.norm().item() ** 2 == pytest.approx(len(p), rel=0.5)


def test_muon_takes_the_filters_and_sgd_every_other_weight_once():
    net = SpeedrunNet(widths=(8, 8, 8))
    sgd, muon = make_speedrun_optimizer(net, SpeedrunConfig(filter_optimizer="muon")).optimizers
    filters = {id(p) for p in net.filter_matrices()}
    assert isinstance(muon, torch.optim.Muon) and isinstance(sgd, torch.optim.SGD)
    assert {id(p) for g in muon.param_groups for p in g["params"]} == filters and len(filters) == 6
    rest = [id(p) for g in sgd.param_groups for p in g["params"]]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(rest) == len(set(rest)) and set(rest) == trainable - filters
    only_sgd, = make_speedrun_optimizer(net, SpeedrunConfig(filter_optimizer="sgd")).optimizers
    assert {id(p) for g in only_sgd.param_groups for p in g["params"]} == trainable
    with pytest.raises(ValueError, match="unknown filter optimizer"):
        make_speedrun_optimizer(net, SpeedrunConfig(filter_optimizer="adam"))


def test_filter_matrix_convolves_as_a_conv2d_with_its_filters():
    torch.manual_seed(0)
    conv = MatrixConv(5, 7)
    with torch.no_grad():
        conv.weight.normal_()
    reference = torch.nn.Conv2d(5, 7, 3, padding=1, bias=False)
    reference.weight.data.copy_(conv.filters())
    x = torch.randn(2, 5, 9, 9).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(conv(x), reference(x), atol=1e-5)
    assert conv.filters().is_contiguous(memory_format=torch.channels_last)


def test_recipe_quick_run_with_muon_learns(fake_official):
    """A few epochs of the recipe with Muon on a small subset: finite, and better than chance
    on the images it trained on."""
    splits = cifar10_splits(fake_official, seed=0, subset=200)
    cfg = SpeedrunConfig(widths=(8, 16, 16), batch_size=50, epochs=4, filter_optimizer="muon",
                         whiten_images=100, whiten_bias_epochs=1)
    result, _ = train_speedrun(splits, cfg, device="cpu", monitor=False)
    checks = result["history"]["checks"]
    assert all(torch.isfinite(torch.tensor(result["history"]["step_loss"])))
    assert checks[-1]["train_accuracy"] > 0.3


def test_lookahead_pulls_the_weights_back_to_a_slow_copy_on_its_schedule():
    net = torch.nn.Linear(3, 2)
    lookahead = Lookahead(net, total_steps=10)
    start = [t.detach().clone() for t in (net.weight, net.bias)]

    def move(by):
        with torch.no_grad():
            for t in (net.weight, net.bias):
                t.add_(by)
    move(1.0)
    lookahead.step(3)                     # not a multiple of `every`: untouched
    assert torch.equal(net.weight, start[0] + 1)
    lookahead.step(5)                     # half-way: decay x (1/2)^3
    d = Lookahead.decay / 8
    assert torch.allclose(net.weight, start[0] + (1 - d)) and torch.allclose(lookahead.slow[0], net.weight)
    reached = [t.detach().clone() for t in (net.weight, net.bias)]
    move(2.0)
    lookahead.step(10)                    # the end: the full decay
    expected = [r + (1 - Lookahead.decay) * 2.0 for r in reached]
    assert all(torch.allclose(t, e) for t, e in zip((net.weight, net.bias), expected))
    move(5.0)
    lookahead.finish()                    # the run ends on the slow copy
    assert all(torch.allclose(t, e) for t, e in zip((net.weight, net.bias), expected))


def test_progressive_resizing_and_lookahead_inside_the_training_function(fake_official,
                                                                         monkeypatch):
    """The first low_res_epochs train on smaller images, the rest (and the scoring) on 32x32;
    with lookahead the run still learns and ends on the slow weights."""
    splits = cifar10_splits(fake_official, seed=0, subset=200)
    sizes = []
    forward = SpeedrunNet.forward

    def recording_forward(self, x):
        if self.training:
            sizes.append(x.shape[-1])
        return forward(self, x)
    monkeypatch.setattr(SpeedrunNet, "forward", recording_forward)
    monkeypatch.setattr(Lookahead, "finish", lambda self: finished.append(True))
    finished = []
    cfg = SpeedrunConfig(widths=(8, 16, 16), batch_size=50, epochs=4, filter_optimizer="muon",
                         whiten_images=100, whiten_bias_epochs=1, lookahead=True,
                         low_res_epochs=2, low_res_px=24)
    result, _ = train_speedrun(splits, cfg, device="cpu", monitor=False)
    steps = (len(splits.train) + len(splits.val)) // 50
    assert sizes == [24] * 2 * steps + [32] * 2 * steps
    assert finished == [True]
    assert result["history"]["checks"][-1]["train_accuracy"] > 0.3


def test_weight_averaging_scores_the_moving_average_of_the_last_epochs(fake_official,
                                                                      monkeypatch):
    """With ema_epochs, the run ends on an exponential moving average of the weights and
    BatchNorm statistics after each step of its last epochs, and only those."""
    from torch.optim.swa_utils import AveragedModel
    splits = cifar10_splits(fake_official, seed=0, subset=100)
    seen, update = [], AveragedModel.update_parameters

    def recording_update(self, model):
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        seen.append((model.head.weight.detach().clone(), bn.running_mean.clone(), bn))
        update(self, model)
    monkeypatch.setattr(AveragedModel, "update_parameters", recording_update)
    decay = 0.8
    cfg = SpeedrunConfig(widths=(8, 8, 8), batch_size=25, epochs=3, whiten_images=50,
                         whiten_bias_epochs=1, ema_epochs=2, ema_decay=decay)
    _, model = train_speedrun(splits, cfg, device="cpu", monitor=False)
    steps = (len(splits.train) + len(splits.val)) // 25
    assert len(seen) == 2 * steps                      # the last 2 of 3 epochs, every step
    head, mean = seen[0][0], seen[0][1]
    for w, m, _ in seen[1:]:
        head, mean = decay * head + (1 - decay) * w, decay * mean + (1 - decay) * m
    bn = seen[-1][2]
    assert torch.allclose(model.head.weight, head, atol=1e-6)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6)
    assert not torch.allclose(model.head.weight, seen[-1][0], atol=1e-4)


def test_training_freezes_the_whitening_bias_after_its_epochs(fake_official, monkeypatch):
    """Inside the real training function: the bias moves in epoch 1 and never after it (the
    freeze must stop momentum and weight decay too)."""
    splits = cifar10_splits(fake_official, seed=0, subset=100)
    biases = []
    forward = SpeedrunNet.forward

    def recording_forward(self, x):
        if self.training:
            biases.append(self.whiten.bias.detach().clone())
        return forward(self, x)
    monkeypatch.setattr(SpeedrunNet, "forward", recording_forward)
    cfg = SpeedrunConfig(widths=(8, 8, 8), batch_size=25, epochs=3, whiten_bias_epochs=1,
                         whiten_images=50)
    result, model = train_speedrun(splits, cfg, device="cpu", monitor=False)
    steps = (len(splits.train) + len(splits.val)) // 25
    assert len(biases) == 3 * steps
    assert not torch.equal(biases[0], biases[steps - 1])          # it trains in epoch 1
    after = biases[steps:] + [model.whiten.bias.detach()]
    assert all(torch.equal(b, after[0]) for b in after)          # and is frozen from epoch 2
    assert result["epochs_completed"] == 3


@pytest.mark.slow
def test_speedrun_quick_writes_metrics_summary_and_figure_and_reuses_finished_seeds(
        fake_image_folder, tmp_path, capsys):
    args = ["--recipe", "speedrun", "--data-dir", str(fake_image_folder), "--output-dir",
            str(tmp_path), "--subset", "100", "--epochs", "2", "--batch-size", "50",
            "--widths", "8,16,16", "--seeds", "3,4", "--no-progress"]
    task3e.main(args)
    out = capsys.readouterr().out
    assert "Speed-run recipe, 2 seed(s)" in out and "with TTA" in out
    assert (tmp_path / "task3e_speedrun_accuracy_vs_time.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "speedrun" / "results.json").read_text())["summary"]
    metrics = [json.loads((tmp_path / "speedrun" / f"seed{s}" / "metrics.json").read_text())
               for s in (3, 4)]
    accs = [100 * m["final"]["test_tta"]["accuracy"] for m in metrics]
    assert summary["n"] == 2 and summary["test_accuracy_tta"]["mean"] == pytest.approx(sum(accs) / 2)
    recipe = metrics[0]["config"]["recipe"]
    assert recipe["widths"] == [8, 16, 16] and metrics[0]["epochs_completed"] == 2
    assert recipe["lr"] == pytest.approx(SPEEDRUN.lr * 50 / 512)  # scaled
    assert recipe["muon_lr"] == pytest.approx(SPEEDRUN.muon_lr * 50 / 512)
    assert metrics[1]["config"]["seed"] == 4
    assert (tmp_path / "speedrun" / "seed4" / "best.pt").is_file()
    task3e.main(args)  # the same command again: both seeds are loaded, not retrained
    assert capsys.readouterr().out.count("finished earlier, loaded") == 2
    task3e.main([a if a != "100" else "120" for a in args][:-3] + ["--seeds", "3", "--no-progress"])
    assert "loaded" not in capsys.readouterr().out  # other data: trained again


@pytest.mark.parametrize("option, value, message", [
    ("--seeds", "0,x", "--seeds '0,x': takes comma-separated whole numbers"),
    ("--widths", "8,16", "--widths '8,16': takes 3 comma-separated"),
    ("--variants", "silu", "unrecognized arguments: --variants silu"),
    ("--patience", "3", "unrecognized arguments: --patience 3"),
])
def test_speedrun_bad_options_are_one_line_errors(fake_image_folder, tmp_path, capsys,
                                                  option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        task3e.main(["--recipe", "speedrun", "--data-dir", str(fake_image_folder),
                     "--output-dir", str(tmp_path), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_every_speedrun_candidate_changes_only_what_it_names(capsys):
    from dataclasses import asdict
    from bench import speedrun_candidates as bench
    before = asdict(bench.BEFORE)
    for name, (_, changes) in bench.CANDIDATES.items():
        _, cfg = bench.configure(name, None)
        if changes is None:  # the recipe as it stands
            assert cfg == SPEEDRUN
            continue
        changed = {k for k, v in asdict(cfg).items() if v != before[k]}
        scaled = {"lr", "weight_decay", "muon_lr"} if "batch_size" in changes else set()
        assert changed <= set(changes) | scaled, name
    assert bench.configure("sgd", 3)[1].epochs == 3
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--candidates", "nope"])
    assert exit_info.value.code == 2 and "--candidates nope: choose from" in capsys.readouterr().err


@pytest.mark.slow
def test_tta_bench_scores_a_finished_seed_at_each_level_and_refuses_other_data(
        fake_image_folder, tmp_path, capsys):
    from bench import speedrun_tta
    task3e.main(["--recipe", "speedrun", "--data-dir", str(fake_image_folder), "--output-dir",
                 str(tmp_path), "--subset", "100", "--epochs", "1", "--batch-size", "50",
                 "--widths", "8,16,16", "--seeds", "0", "--no-progress"])
    seed = tmp_path / "speedrun" / "seed0"
    out = tmp_path / "tta.json"
    speedrun_tta.main(["--data-dir", str(fake_image_folder), "--seed-dirs", str(seed),
                       "--out", str(out)])
    result = json.loads(out.read_text())
    recorded = json.loads((seed / "metrics.json").read_text())["final"]
    levels = result["seeds"][str(seed)]["levels"]
    assert levels["2"]["accuracy"] == pytest.approx(100 * recorded["test_tta"]["accuracy"])
    assert levels["0"]["accuracy"] == pytest.approx(100 * recorded["test"]["accuracy"])
    assert set(result["summary"]) == {"0", "1", "2"} and "TTA level 1" in capsys.readouterr().out
    metrics = json.loads((seed / "metrics.json").read_text())
    metrics["config"]["data_digest"] = "other"
    (seed / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit) as exit_info:  # other images than the seed trained on
        speedrun_tta.main(["--data-dir", str(fake_image_folder), "--seed-dirs", str(seed)])
    assert exit_info.value.code == 2
    assert "trained on other data" in capsys.readouterr().err
    (seed / "best.pt").write_bytes(b"damaged")
    with pytest.raises(SystemExit) as exit_info:
        speedrun_tta.main(["--data-dir", str(fake_image_folder), "--seed-dirs", str(seed)])
    assert exit_info.value.code == 2
    assert "cannot be read" in capsys.readouterr().err

"""The speed-run recipe (task3e.py --recipe speedrun): its parts, and the script end to end."""
import json

import pytest
import torch
import torch.nn.functional as F

import task3e
from common.augment import AugmentConfig
from common.loader import TensorLoader
from common.speedrun import (SpeedrunConfig, SpeedrunNet, lr_multiplier, patches, predict,
                             whitening_filters)


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
    cfg = SpeedrunConfig(warmup=0.25, lr_start=0.2, lr_end=0.1)
    assert lr_multiplier(0, 100, cfg) == pytest.approx(0.2)
    assert lr_multiplier(25, 100, cfg) == pytest.approx(1.0)
    assert lr_multiplier(100, 100, cfg) == pytest.approx(0.1)
    assert lr_multiplier(60, 100, cfg) < lr_multiplier(40, 100, cfg)


def test_alternating_flip_flips_each_image_in_every_other_epoch():
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)  # the label identifies the image
    loader = TensorLoader(images, labels, 10, device="cpu", train=True,
                          augment=AugmentConfig(alternating_flip=True),
                          normalization=((0, 0, 0), (1, 1, 1)), channels_last=False)

    def flipped(epoch):
        loader.set_epoch(epoch)
        out = {}
        for x, y in loader:
            for img, i in zip(x, y):
                original = images[i].float() / 255
                out[int(i)] = not torch.allclose(img, original)
                assert torch.allclose(img, original.flip(-1) if out[int(i)] else original)
        return out

    e0, e1, e2 = flipped(0), flipped(1), flipped(2)
    assert 5 < sum(e0.values()) < 35                       # a random half, roughly
    assert all(e1[i] != e0[i] for i in e0) and e2 == e0


def test_test_time_augmentation_levels():
    net = SpeedrunNet(widths=(8, 8, 8)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        plain = net(x)
        assert torch.allclose(predict(net, x, 0), plain)
        assert torch.allclose(predict(net, x, 1), 0.5 * (plain + net(x.flip(-1))), atol=1e-6)
        assert predict(net, x, 2).shape == (3, 10)


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
    assert summary["n"] == 2 and 0 <= summary["test_accuracy_tta"]["mean"] <= 100
    metrics = json.loads((tmp_path / "speedrun" / "seed3" / "metrics.json").read_text())
    assert metrics["recipe"]["widths"] == [8, 16, 16] and metrics["epochs_completed"] == 2
    assert (tmp_path / "speedrun" / "seed4" / "model.pt").is_file()
    task3e.main(args)  # the same command again: both seeds are loaded, not retrained
    assert capsys.readouterr().out.count("finished earlier, loaded") == 2


@pytest.mark.parametrize("option, value, message", [
    ("--seeds", "0,x", "--seeds takes comma-separated whole numbers"),
    ("--widths", "8,16", "--widths takes 3 comma-separated"),
])
def test_speedrun_bad_options_are_one_line_errors(fake_image_folder, tmp_path, capsys,
                                                  option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        task3e.main(["--recipe", "speedrun", "--data-dir", str(fake_image_folder),
                     "--output-dir", str(tmp_path), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

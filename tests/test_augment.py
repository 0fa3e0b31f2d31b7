"""Batched augmentation (per-image random parameters) and the TensorLoader (labels aligned,
shuffling per epoch, last batch, normalisation, DDP shards)."""
import pytest
import torch

from common.data import AugmentConfig, BatchAugment
from common.data import CIFAR_NORMALIZATION, TensorLoader

N = 200


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(N, 3, 32, 32)


def changed(x, y, tol=1e-3):
    """Per image: does y differ from x anywhere by more than tol?"""
    return (x - y).abs().flatten(1).amax(1) > tol


def distinct_outputs(out, tol=1e-3):
    """How many different images are in out (out holds transforms of one image)."""
    reps = []
    for img in out:
        if all((img - r).abs().max() > tol for r in reps):
            reps.append(img)
    return len(reps)


AUGMENTS = {
    "hflip": AugmentConfig(hflip=True),
    "rotation": AugmentConfig(rotate_degrees=10),
    "translate": AugmentConfig(translate_px=2),
    "hue": AugmentConfig(hue=0.05),
    "saturation": AugmentConfig(saturation=0.5),
    "noise": AugmentConfig(noise_std=0.05),
}
MIN_CHANGED = {"hflip": 0.35, "rotation": 0.9, "translate": 0.85, "hue": 0.9,
               "saturation": 0.9, "noise": 1.0}


@pytest.mark.parametrize("name", AUGMENTS)
def test_augmentation_keeps_shape_dtype_and_range_and_changes_most_images(name, images):
    torch.manual_seed(1)
    out = BatchAugment(AUGMENTS[name])(images.clone())
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    fraction = changed(images, out).float().mean().item()
    assert fraction >= MIN_CHANGED[name], fraction


@pytest.mark.parametrize("name", AUGMENTS)
def test_augmentation_draws_parameters_per_image(name, images):
    """One image repeated: a batch-wide parameter would give identical outputs."""
    same = images[:1].repeat(64, 1, 1, 1)
    torch.manual_seed(2)
    out = BatchAugment(AUGMENTS[name])(same)
    expected = 2 if name == "hflip" else 20  # flipped or not; continuous draws all differ
    assert distinct_outputs(out) >= expected


def test_hflip_flips_about_half_the_images_exactly(images):
    torch.manual_seed(3)
    out = BatchAugment(AugmentConfig(hflip=True))(images.clone())
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(out, images)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, images)])
    assert torch.all(flipped ^ kept)  # every image is exactly one of the two
    assert 0.35 <= flipped.float().mean().item() <= 0.65


def test_translation_shifts_by_whole_pixels_within_range_with_black_border(images):
    torch.manual_seed(4)
    t = 2
    out = BatchAugment(AugmentConfig(translate_px=t))(images.clone())
    padded = torch.nn.functional.pad(images, (t, t, t, t))
    shifts = []
    for o, p in zip(out, padded):
        found = [(dx, dy) for dx in range(-t, t + 1) for dy in range(-t, t + 1)
                 if torch.allclose(o, p[:, t + dy:t + dy + 32, t + dx:t + dx + 32], atol=1e-5)]
        assert len(found) == 1, "output is not a whole-pixel shift of its input"
        shifts.append(found[0])
    assert len(set(shifts)) >= 20  # of the 25 possible shifts, per image
    assert max(abs(s) for shift in shifts for s in shift) == t


def test_rotation_by_zero_with_translate_zero_is_identity(images, monkeypatch):
    """The affine path itself (grid convention) must not blur or shift: angle 0, shift 0."""
    aug = BatchAugment(AugmentConfig(rotate_degrees=15))
    monkeypatch.setattr(torch, "rand", lambda n, device=None: torch.full((n,), 0.5))
    out = aug(images.clone())  # uniform draw 0.5 -> angle (2 * 0.5 - 1) * 15 = 0
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_rotation_turns_a_bar_by_the_drawn_angle():
    """A horizontal bar rotated by up to 30 degrees leaves the row it was in."""
    bar = torch.zeros(64, 3, 32, 32)
    bar[:, :, 15:17, 2:30] = 1.0
    torch.manual_seed(5)
    out = BatchAugment(AugmentConfig(rotate_degrees=30))(bar.clone())
    mass_outside = out[:, :, :, :].sum((1, 2, 3)) - out[:, :, 15:17, :].sum((1, 2, 3))
    # ends of the bar tilt off its two rows unless the angle is tiny
    assert (mass_outside > 3).float().mean() >= 0.8
    torch.testing.assert_close(out.sum((1, 2, 3)), bar.sum((1, 2, 3)), rtol=0.1, atol=0)


def test_gaussian_noise_has_the_configured_std(images):
    mid = 0.25 + 0.5 * images  # far from 0 and 1: clamping does not bias the residual
    torch.manual_seed(6)
    out = BatchAugment(AugmentConfig(noise_std=0.05))(mid.clone())
    residual = out - mid
    assert abs(residual.std().item() - 0.05) < 0.002
    assert abs(residual.mean().item()) < 0.002
    per_image_std = residual.flatten(1).std(1)
    assert per_image_std.min() > 0.04  # every image gets noise


def test_saturation_zero_image_is_unchanged_by_saturation_jitter():
    grey = torch.rand(16, 1, 32, 32).repeat(1, 3, 1, 1)
    torch.manual_seed(7)
    out = BatchAugment(AugmentConfig(saturation=0.5))(grey.clone())
    torch.testing.assert_close(out, grey, atol=1e-4, rtol=0)


def test_inactive_config_builds_no_augmentation():
    assert not AugmentConfig().active
    assert AugmentConfig(noise_std=0.1).active
    loader = TensorLoader(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4).long(), 2,
                          device="cpu", train=True, augment=AugmentConfig())
    assert loader.augment is None


# ---------------------------------------------------------------- TensorLoader

def encoded(n, num_classes=10):
    """uint8 images whose pixels encode their label and index: channel 0 = 20 * label,
    channels 1, 2 = index // 256, index % 256 (constant images: flips leave them be)."""
    labels = torch.arange(n) % num_classes
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = (20 * labels).view(-1, 1, 1)
    images[:, 1] = (torch.arange(n) // 256).view(-1, 1, 1)
    images[:, 2] = (torch.arange(n) % 256).view(-1, 1, 1)
    return images, labels


def decode(x):
    """Undo the CIFAR normalisation: (labels from pixels, indices from pixels)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in CIFAR_NORMALIZATION)
    v = torch.round((x * std + mean) * 255).to(torch.int64)
    assert torch.all(v == v[:, :, :1, :1]), "images are not constant any more"
    v = v[:, :, 0, 0]
    return v[:, 0] // 20, v[:, 1] * 256 + v[:, 2]


def epoch_indices(loader, epoch=0):
    loader.set_epoch(epoch)
    batches = []
    for x, y in loader:
        labels, idx = decode(x)
        assert torch.equal(labels, y), "labels not aligned with their images"
        batches.append(idx)
    return batches


def make_loader(n, batch_size, train, **kw):
    images, labels = encoded(n)
    return TensorLoader(images, labels, batch_size, device="cpu", train=train, seed=0, **kw)


def test_train_loader_keeps_labels_aligned_with_augmented_images():
    loader = make_loader(100, 16, True, augment=AugmentConfig(hflip=True))
    for epoch in range(3):
        idx = torch.cat(epoch_indices(loader, epoch))
        assert len(set(idx.tolist())) == len(idx) == 96


def test_normalisation_is_the_cifar_preset():
    images = torch.tensor([0, 64, 128, 191, 255], dtype=torch.uint8).view(5, 1, 1, 1)
    images = images.expand(5, 3, 32, 32).contiguous()
    loader = TensorLoader(images, torch.zeros(5).long(), 5, device="cpu", train=False)
    x, _ = next(iter(loader))
    expected = (images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)
    assert x[0].min().item() == pytest.approx(-2.0) and x[4].max().item() == pytest.approx(2.0)


def test_train_loader_shuffles_differently_per_epoch_and_identically_for_the_same_epoch():
    loader = make_loader(100, 10, True)
    e0, e1 = torch.cat(epoch_indices(loader, 0)), torch.cat(epoch_indices(loader, 1))
    again = torch.cat(epoch_indices(loader, 0))
    assert torch.equal(e0, again)
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, torch.arange(100))
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(100))
    other_seed = TensorLoader(*encoded(100), 10, device="cpu", train=True, seed=1)
    assert not torch.equal(torch.cat(epoch_indices(other_seed, 0)), e0)


def test_train_loader_drops_the_incomplete_last_batch():
    loader = make_loader(100, 32, True)
    batches = epoch_indices(loader)
    assert len(loader) == 3 == len(batches)
    assert [len(b) for b in batches] == [32, 32, 32]
    assert len(set(torch.cat(batches).tolist())) == 96


def test_eval_loader_covers_every_image_exactly_once_in_order():
    loader = make_loader(100, 32, False)
    batches = epoch_indices(loader)
    assert len(loader) == 4 == len(batches)
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat(batches), torch.arange(100))


def test_batches_start_resumes_mid_epoch():
    loader = make_loader(100, 10, True)
    full = epoch_indices(loader, 2)
    loader.set_epoch(2)
    rest = [decode(x)[1] for x, _ in loader.batches(start=4)]
    assert len(rest) == 6
    assert all(torch.equal(a, b) for a, b in zip(rest, full[4:]))


@pytest.mark.parametrize("n", [96, 100])
def test_ddp_train_shards_are_equal_disjoint_and_cover_the_epoch(n):
    world = 3
    shards = []
    for rank in range(world):
        loader = make_loader(n, 8, True, rank=rank, world_size=world)
        shards.append(torch.cat(epoch_indices(loader, epoch=1)))
    lengths = {len(s) for s in shards}
    assert lengths == {32}  # ceil(n / 3) = 32 or 34 per rank, in whole batches of 8
    # before the last partial batch is dropped, the shards together are the whole epoch
    full = [make_loader(n, 1, True, rank=r, world_size=world) for r in range(world)]
    full_shards = [torch.cat(epoch_indices(lo, epoch=1)) for lo in full]
    assert len({len(s) for s in full_shards}) == 1
    union = torch.cat(full_shards).tolist()
    assert set(union) == set(range(n))
    assert len(union) - n == (-n) % world  # padding duplicates only to equalise lengths
    if n % world == 0:  # no padding: pairwise disjoint
        for a in range(world):
            for b in range(a + 1, world):
                assert not set(full_shards[a].tolist()) & set(full_shards[b].tolist())
    # all ranks agree on the epoch's permutation: the same seed gives the same shards
    again = torch.cat(epoch_indices(make_loader(n, 1, True, rank=1, world_size=world), 1))
    assert torch.equal(again, full_shards[1])


def test_ddp_eval_shards_cover_every_image_exactly_once():
    shards = [torch.cat(epoch_indices(make_loader(100, 16, False, rank=r, world_size=3)))
              for r in range(3)]
    union = torch.cat(shards)
    assert sorted(union.tolist()) == list(range(100))

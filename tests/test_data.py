"""CIFAR-10 data layer: both sources give the same tensors, the uint8 cache (reuse, rebuild,
read-only folders), and the train/validation split and class-balanced subsets."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import common.data as data
from common.data import (CLASSES, balanced_subset, cache_path, cifar10_splits, load_cifar10,
                         stratified_split)

CACHE_NAME = ".cifar10-uint8-cache.pt"


def as_tensors(arrays):
    """conftest arrays (N, 32, 32, 3) uint8 + labels -> (N, 3, 32, 32) uint8, int64 labels."""
    images, labels = arrays
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(labels).to(torch.int64))


def canonical(images, labels):
    """Sort by (label, pixel bytes): an order independent of the source's file order."""
    keys = sorted(range(len(labels)),
                  key=lambda i: (int(labels[i]), images[i].numpy().tobytes()))
    idx = torch.tensor(keys)
    return images[idx], labels[idx]


def copy_folder(src: Path, dst: Path) -> Path:
    """A private copy of a (session-shared) fixture, without any cache built beside it."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CACHE_NAME))
    return dst


def all_files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of the image-folder decoder (it still runs)."""
    calls = []
    original = data._decode_image_folder

    def counting(root, progress):
        calls.append(Path(root))
        return original(root, progress)

    monkeypatch.setattr(data, "_decode_image_folder", counting)
    return calls


# ---------------------------------------------------------------- both sources

def test_image_folder_loads_pixels_and_labels_in_class_order(fake_image_folder, fake_arrays):
    loaded, source = load_cifar10(fake_image_folder, download=False, progress=False)
    for split, arrays in (("train", fake_arrays[0]), ("test", fake_arrays[1])):
        images, labels = loaded[f"{split}_images"], loaded[f"{split}_labels"]
        assert images.shape == (len(arrays[1]), 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        want_images, want_labels = as_tensors(arrays)
        # the folder is read class by class, files sorted: the fixture's own order
        assert torch.equal(labels, want_labels)
        assert torch.equal(images, want_images)
    assert loaded["train_images"].shape[0] == 400 and loaded["test_images"].shape[0] == 100
    assert source.startswith("image-folder:")
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")


def test_official_batches_and_image_folder_give_identical_tensors(fake_official,
                                                                  fake_image_folder):
    official, official_source = load_cifar10(fake_official, download=False, progress=False)
    folder, _ = load_cifar10(fake_image_folder, download=False, progress=False)
    assert official_source.startswith("official:")
    # the official order follows the pickled batches (shuffled by the fixture)
    assert not torch.equal(official["train_labels"], folder["train_labels"])
    for split in ("train", "test"):
        a_images, a_labels = official[f"{split}_images"], official[f"{split}_labels"]
        assert a_images.shape == folder[f"{split}_images"].shape
        assert a_images.dtype == torch.uint8 and a_labels.dtype == torch.int64
        a = canonical(a_images, a_labels)
        b = canonical(folder[f"{split}_images"], folder[f"{split}_labels"])
        assert torch.equal(a[1], b[1])
        assert torch.equal(a[0], b[0])
    assert torch.bincount(official["train_labels"]).tolist() == [40] * 10


def test_official_folder_itself_is_accepted_as_data_dir(fake_official):
    by_parent, _ = load_cifar10(fake_official, download=False, progress=False)
    by_folder, _ = load_cifar10(fake_official / "cifar-10-batches-py", download=False,
                                progress=False)
    assert torch.equal(by_parent["train_images"], by_folder["train_images"])
    assert torch.equal(by_parent["test_labels"], by_folder["test_labels"])


# ---------------------------------------------------------------- cache

def test_second_load_reads_the_cache_without_decoding(fake_image_folder, tmp_path,
                                                      monkeypatch):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    first, _ = load_cifar10(root, download=False, progress=False)
    assert cache_path(root) == root.resolve() / CACHE_NAME and cache_path(root).is_file()

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(data, "_decode_image_folder", must_not_decode)
    second, _ = load_cifar10(root, download=False, progress=False)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(first[key], second[key])
    assert "fingerprint" not in second


def test_cache_is_rebuilt_when_an_image_is_replaced(fake_image_folder, tmp_path, count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    before, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 1
    target = root / "train" / "bird" / "0000.png"  # bird: label 2, the 81st training image
    new_pixels = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(new_pixels).save(target)
    after, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2
    assert torch.equal(after["train_images"][80], torch.full((3, 32, 32), 7, dtype=torch.uint8))
    assert not torch.equal(before["train_images"][80], after["train_images"][80])
    assert torch.equal(after["train_images"][81:], before["train_images"][81:])


def test_cache_is_rebuilt_when_an_image_is_added(fake_image_folder, tmp_path, count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    load_cifar10(root, download=False, progress=False)
    shutil.copy(root / "test" / "cat" / "0000.png", root / "test" / "cat" / "9999.png")
    after, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2
    assert len(after["test_labels"]) == 101
    assert torch.bincount(after["test_labels"]).tolist() == [10, 10, 10, 11, 10, 10, 10, 10,
                                                             10, 10]


def test_cache_is_rebuilt_when_an_image_is_touched_or_removed(fake_image_folder, tmp_path,
                                                             count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    load_cifar10(root, download=False, progress=False)
    touched = root / "train" / "ship" / "0005.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes
    load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2
    (root / "train" / "ship" / "0006.png").unlink()
    after, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 3
    assert torch.bincount(after["train_labels"]).tolist() == [40] * 8 + [39, 40]


def test_corrupt_cache_is_rebuilt_not_trusted(fake_image_folder, tmp_path, count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    good, _ = load_cifar10(root, download=False, progress=False)
    cache = cache_path(root)
    cache.write_bytes(b"\x80\x02 definitely not a torch file" * 10)
    again, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2
    assert torch.equal(again["train_images"], good["train_images"])
    assert torch.equal(again["test_labels"], good["test_labels"])
    # the rebuilt cache is valid again: a third load decodes nothing
    assert torch.load(cache, weights_only=True)["train_images"].shape == (400, 3, 32, 32)
    load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2


def test_cache_with_wrong_shapes_is_rebuilt(fake_image_folder, tmp_path, count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    load_cifar10(root, download=False, progress=False)
    cache = cache_path(root)
    state = torch.load(cache, weights_only=True)
    state["train_images"] = state["train_images"][:, :, :16]  # same fingerprint, bad tensor
    torch.save(state, cache)
    again, _ = load_cifar10(root, download=False, progress=False)
    assert len(count_decodes) == 2
    assert again["train_images"].shape == (400, 3, 32, 32)


def test_read_only_data_folder_caches_in_xdg_cache_home(fake_image_folder, tmp_path,
                                                        count_decodes):
    root = copy_folder(fake_image_folder, tmp_path / "data")
    xdg = Path(os.environ["XDG_CACHE_HOME"])  # conftest points it into a temporary folder
    before = all_files(root)
    root.chmod(0o555)
    try:
        cache = cache_path(root)
        assert cache.parent == xdg / "cifar10-tasks"
        first, _ = load_cifar10(root, download=False, progress=False)
        assert cache.is_file()
        second, _ = load_cifar10(root, download=False, progress=False)
        assert all_files(root) == before  # nothing written into the data folder
    finally:
        root.chmod(0o755)
    assert len(count_decodes) == 1  # the second load used the cache in XDG_CACHE_HOME
    assert torch.equal(first["train_images"], second["train_images"])


def test_read_only_folders_get_distinct_cache_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        d.chmod(0o555)
    try:
        assert cache_path(a) != cache_path(b)
        assert cache_path(a).parent == cache_path(b).parent
    finally:
        a.chmod(0o755)
        b.chmod(0o755)


# ---------------------------------------------------------------- splits

def uneven_labels():
    """Classes of 50, 30, 20 and 7 images, interleaved."""
    counts = [50, 30, 20, 7]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]


def test_stratified_split_is_disjoint_covers_all_and_holds_out_10_percent_per_class():
    labels = uneven_labels()
    rest, held = stratified_split(labels, 0.1, seed=0)
    assert len(set(rest.tolist()) & set(held.tolist())) == 0
    assert sorted(rest.tolist() + held.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[held]).tolist() == [5, 3, 2, 1]  # round(10%) of 50/30/20/7
    assert torch.bincount(labels[rest]).tolist() == [45, 27, 18, 6]


def test_stratified_split_is_fixed_by_the_seed():
    labels = uneven_labels()
    rest0, held0 = stratified_split(labels, 0.1, seed=0)
    rest0b, held0b = stratified_split(labels, 0.1, seed=0)
    _, held1 = stratified_split(labels, 0.1, seed=1)
    assert torch.equal(held0, held0b) and torch.equal(rest0, rest0b)
    assert not torch.equal(held0, held1)
    assert torch.bincount(labels[held1]).tolist() == [5, 3, 2, 1]


def test_cifar10_splits_sizes_add_up_to_the_training_images(fake_official):
    splits = cifar10_splits(fake_official, seed=0, download=False, progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (360, 40, 100)
    assert torch.bincount(splits.val.labels).tolist() == [4] * 10
    # train + val are exactly the training images: nothing lost, nothing shared
    everything, _ = load_cifar10(fake_official, download=False, progress=False)
    joined = canonical(torch.cat([splits.train.images, splits.val.images]),
                       torch.cat([splits.train.labels, splits.val.labels]))
    want = canonical(everything["train_images"], everything["train_labels"])
    assert torch.equal(joined[0], want[0]) and torch.equal(joined[1], want[1])
    assert splits.train.images.shape[1:] == (3, 32, 32)
    assert splits.source.startswith("official:")


def test_cifar10_splits_subset_caps_every_split(fake_official):
    splits = cifar10_splits(fake_official, seed=0, subset=25, download=False, progress=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (25, 25, 25)
    for split in (splits.train, splits.val, splits.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.max() - counts.min() <= 1


def test_balanced_subset_is_at_most_n_class_balanced_and_deterministic():
    labels = torch.arange(10).repeat_interleave(40)
    for n in (1, 9, 10, 25, 399):
        idx = balanced_subset(labels, n, seed=0)
        assert len(idx) == n
        assert len(set(idx.tolist())) == n
        counts = torch.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts.tolist())
    assert torch.equal(balanced_subset(labels, 25, seed=0), balanced_subset(labels, 25, seed=0))
    assert not torch.equal(balanced_subset(labels, 25, seed=0), balanced_subset(labels, 25, seed=1))
    assert torch.equal(balanced_subset(labels, 1000, seed=0), torch.arange(400))

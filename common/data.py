"""CIFAR-10 from either source (torchvision's official batches or an image folder), decoded
once to uint8 tensors, cached, checked and split; the loader that serves batches from tensors
kept on the training device (airbench's, not a per-image DataLoader); batched augmentation."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import pickle
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps  # torchvision.io's decoders are deprecated since 0.29
from torch import nn

from .errors import UserError
from .files import load_cache, save_torch
# the record's kinds of value, the augmentation a recipe asks for and the recipes'
# normalizations live with the recipes, which load without torch (a script's --help)
from .recipes import (CIFAR_NORMALIZATION, IMAGENET_NORMALIZATION, RECORD,  # noqa: F401
                      SPEEDRUN_NORMALIZATION, AugmentConfig, Count)
from .system import epoch_generator, generator

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # CIFAR-10's label order (batches.meta)
NUM_CLASSES = len(CLASSES)
OFFICIAL_SUBDIR = "cifar-10-batches-py"
CACHE_VERSION = 4  # 3: 16-bit greyscale scaled, not clipped to white; 4: EXIF orientation,
# transparency over white, 32-bit integers of 8-bit values, a TIFF's declared width
VALIDATION_FRACTION = 0.1  # starter code: 45,000 train / 5,000 validation


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self):
        return len(self.labels)


@dataclass
class CIFAR10Splits:
    train: Split
    val: Split
    test: Split
    source: str  # "official" or "image-folder", with the path
    digest: str  # of the decoded pixels and labels: the same data wherever it lies


def resolve_data_dir(arg: str | Path | None) -> Path:
    """The data folder given, else $CIFAR10_DIR, else ./data/cifar10; ~ is the home folder."""
    if arg is not None and not str(arg).strip():
        raise UserError("an empty path names no folder", setting="data_dir", value="''")
    return Path(arg or os.environ.get("CIFAR10_DIR") or "data/cifar10").expanduser()


# ---------------------------------------------------------------- official batches (torchvision)

def _official_files(root: Path) -> list[Path]:
    """The batch files, whether `root` holds cifar-10-batches-py/ or is that folder; a missing
    one is refused."""
    from torchvision.datasets import CIFAR10
    folder = (root.parent if root.name == OFFICIAL_SUBDIR else root) / OFFICIAL_SUBDIR
    files = [folder / name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise UserError(f"{root / OFFICIAL_SUBDIR} is missing {', '.join(missing)}; delete "
                        "the folder to download CIFAR-10 again", value=root)
    return files


def _decode_official(root: Path) -> dict:
    from torchvision.datasets import CIFAR10

    class _PresentCIFAR10(CIFAR10):
        # torchvision checks every batch's md5 (and the meta file's) at each load; the download
        # verified the archive, _official_files their presence; a damaged batch fails to unpickle
        def _check_integrity(self):
            return True

        def _load_meta(self):  # the class names are CLASSES: no meta file needed
            pass

    out, parent = {}, _official_files(root)[0].parent.parent
    for split in ("train", "test"):
        try:
            ds = _PresentCIFAR10(parent, train=split == "train", download=False)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                AttributeError, IndexError, OSError, RuntimeError) as err:  # a damaged batch
            raise UserError(f"cannot read the CIFAR-10 batches in {root} ({type(err).__name__}); "
                            "delete the folder to download CIFAR-10 again", value=root) from None
        images, labels = ds.data, ds.targets
        batches = f"the CIFAR-10 {split} batches in {root}"
        if len(labels) != len(images):  # torchvision has made the images (N, 32, 32, 3)
            raise UserError(f"{batches} hold {len(labels)} labels for images of shape "
                            f"{images.shape}; expected one label per 32x32 image", value=root)
        if not len(images):  # checked here: the split would fail on it first (torch.cat)
            raise UserError(f"{batches} hold no images; delete the folder to download "
                            "CIFAR-10 again", value=root)
        # only uint8, even integers within 0-255: another type is another writer's, whose scale
        # (0-255 in int64, 0-1 in float, 16 bits) cannot be known; a guess trains on wrong data
        if images.dtype != np.uint8:
            spread = f" from {images.min()} to {images.max()}" \
                if images.size and images.dtype.kind in "iuf" else ""
            raise UserError(f"{batches} hold {images.dtype} pixels{spread}; expected uint8 "
                            "(0-255)", value=root)
        out[f"{split}_images"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        # labels: whole numbers in 0-9; a whole float (1.0) is that number, 1.5 refused, not cut
        try:
            values = np.asarray(labels)
        except ValueError:  # a ragged list: numpy refuses to make one array of it
            values = np.asarray(labels, dtype=object)
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise UserError(f"{batches} hold labels of type {values.dtype} (shape "
                            f"{values.shape}); expected whole numbers 0-9", value=root)
        if values.dtype.kind == "f":
            fractional = values[~(np.isfinite(values) & (values == np.floor(values)))]
            if len(fractional):
                raise UserError(f"{batches} hold labels that are not whole numbers (such as "
                                f"{fractional[0]}); expected 0-9", value=root)
        if len(values) and not (0 <= values.min() and values.max() < NUM_CLASSES):
            raise UserError(f"{batches} hold labels outside 0-9 ({values.min()}.."
                            f"{values.max()})", value=root)
        out[f"{split}_labels"] = torch.from_numpy(values.astype(np.int64))
    return out


def download_official(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    # the folders this attempt creates, deepest first: a failed one removes them again
    created = [p for p in (root, *root.parents) if p.name not in ("", "..") and not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(root, train=True, download=True)
    except (OSError, RuntimeError, ValueError, tarfile.TarError,
            http.client.HTTPException) as err:
        # no network, a refused or cut connection, a corrupt archive, a full disk
        raise UserError(f"CIFAR-10 is not in {root} and downloading it failed "
                        f"({' '.join(str(err).split())[:200]}); give a folder holding "
                        f"{OFFICIAL_SUBDIR}/ or train/<class>/ and test/<class>/ images",
                        setting="data_dir", value=root) from None
    finally:  # failed or interrupted: the folders this attempt made go again, empty ones
        # only: one holding a partial download stays, and so do all after a download
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


# ---------------------------------------------------------------- image folder

def _image_folder_files(root: Path) -> dict:
    """{'train': [(path, label), ...], 'test': [...]}, checking the class folders.

    Every file below a class folder counts, at any depth, as torchvision's ImageFolder reads
    one (os.walk, links followed): skipping a sub-folder would drop data without a word.
    Hidden files and folders are left out (.DS_Store, .ipynb_checkpoints' copies); a link to
    a folder already read is not followed, so a link back up the tree cannot loop."""
    files = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"{root} has no {split}/ folder; an image-folder CIFAR-10 needs "
                            "train/<class>/ and test/<class>/", value=root)
        present = {p.name for p in split_dir.iterdir()
                   if p.is_dir() and not p.name.startswith(".")}
        problems = [f"{what}: {', '.join(names)}" for what, names in (
            ("missing class folders", [c for c in CLASSES if c not in present]),
            ("unexpected folders", sorted(present - set(CLASSES)))) if names]
        if problems:
            raise UserError(f"{split_dir}: {'; '.join(problems)} (expected exactly the 10 "
                            f"CIFAR-10 classes: {', '.join(CLASSES)})", value=split_dir)
        files[split] = []
        for label, name in enumerate(CLASSES):
            paths, seen = [], set()
            for parent, subfolders, names in os.walk(split_dir / name, followlinks=True):
                seen.add(os.path.realpath(parent))
                subfolders[:] = [d for d in subfolders if not d.startswith(".")
                                 and os.path.realpath(os.path.join(parent, d)) not in seen]
                paths += [Path(parent, n) for n in names if not n.startswith(".")
                          and os.path.isfile(os.path.join(parent, n))]
            if not paths:
                raise UserError(f"class folder {split_dir / name} holds no images",
                                value=split_dir / name)
            files[split] += [(p, label) for p in sorted(paths)]
    return files


def decoded_rgb(im: Image.Image, path) -> np.ndarray:
    """(H, W, 3) uint8: the picture as a viewer shows it, whatever its mode and container.

    - Turned as its EXIF orientation says: a phone stores a portrait photo on its side.
    - Transparent pixels shown over white, as a page shows them (P with transparency, LA,
      RGBA, ...): convert("RGB") would keep whatever colour a transparent pixel holds.
    - Integer samples (modes I;16*, I) reduced to 8 bits by the scale their file declares:
      16 bits for a 16-bit PNG or PGM, TIFF's BitsPerSample (12, 16), keeping the top byte
      (65535 -> 255) as Pillow reduces 16-bit RGB itself. 32-bit integers declare no scale
      (no one stores a picture on 0-4,294,967,295), so their values decide: all within
      0-255 are 8-bit values, within 0-65535 16-bit ones.
    - Float samples (mode F), negative values, or values past their scale have no honest
      0-255 mapping: refused.
    Other modes (1, L, P, RGB, CMYK, YCbCr, LAB) are Pillow's conversion; a file of several
    frames (GIF, TIFF) is read by its first, as it opens."""
    # the declared width is read from the file's header, which the turned copy no longer has;
    # 32-bit integers (or an image made in memory from int32) declare none
    bits = None
    if im.mode.startswith("I"):
        if im.format == "TIFF":
            declared = im.tag_v2.get(258)  # BitsPerSample: (12,), (16,), (32,)
            declared = declared[0] if isinstance(declared, tuple) else declared
            bits = declared if isinstance(declared, int) and 8 < declared <= 16 else None
        elif im.format in ("PNG", "PPM") or im.mode.startswith("I;16"):
            # a PNG holds at most 16 bits (older Pillow opened them as mode I); Pillow scales
            # a PGM's maxval onto 0-65535 itself
            bits = 16
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith(("I", "F")):
        samples = np.asarray(im)  # read as they are only here: the 60,000 8-bit images are not
        if samples.ndim == 2 and samples.dtype.kind in "iu" and samples.size \
                and samples.min() >= 0:
            top = int(samples.max())
            scale = bits or (8 if top <= 0xFF else 16 if top <= 0xFFFF else None)
            if scale is not None and top < 2 ** scale:
                return np.dstack([(samples >> (scale - 8)).astype(np.uint8)] * 3)
        spread = f" from {samples.min()} to {samples.max()}" if samples.size else ""
        declared = f" (its file declares {bits} bits)" if bits else ""
        raise UserError(f"image {path} has mode {im.mode} pixels{spread}{declared}, which do "
                        "not map onto 0-255; save it with 8 or 16 bits per channel", value=path)
    if im.has_transparency_data:
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    return np.array(im.convert("RGB"))


def read_image(path, size: tuple[int, int] | None = (32, 32),
               setting: str | None = None) -> torch.Tensor:
    """An image file -> (3, H, W) uint8, decoded by its mode (decoded_rgb). With `size` (a
    CIFAR-10 image's 32x32 by default) the size is checked from the header, before any pixel
    is decoded; with None (a photograph: predict.py, task4bc.py) any size up to PIL's limit is
    read, also checked before decoding. `setting`: the option that named the file, for the
    error's words."""
    def refused(problem: str) -> UserError:
        return UserError(f"cannot be read as an image ({problem})" if setting is not None
                         else f"cannot read image {path}: {problem}", setting=setting, value=path)
    try:
        with warnings.catch_warnings():
            # PIL warns of a large header on its own; the checks below refuse it in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # a damaged EXIF block reads as no orientation (what a viewer shows); the pixels
            # are intact, and a warning would be two more lines on stderr
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            with Image.open(path) as im:
                if size is not None and im.size != size:
                    raise UserError(f"image {path} is {im.width}x{im.height}, CIFAR-10 "
                                    f"images must be {size[0]}x{size[1]}", value=path)
                if im.width * im.height > Image.MAX_IMAGE_PIXELS:
                    raise refused(f"it declares {im.width}x{im.height} pixels, more than a "
                                  "photograph needs")
                pixels = decoded_rgb(im, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # an OSError's strerror, not its str(): that would name the path again
        raise refused(getattr(err, "strerror", None) or " ".join(str(err).split())[:200]) \
            from None
    return torch.from_numpy(pixels).permute(2, 0, 1)  # decoded_rgb gives uint8 only


def _decode_image_folder(root: Path, progress: bool) -> dict:
    from tqdm import tqdm
    out = {}
    for split, items in _image_folder_files(root).items():
        out[f"{split}_images"] = torch.stack([read_image(path) for path, _ in tqdm(
            items, desc=f"decoding {split} images", unit="img", disable=not progress,
            mininterval=1.0)])
        out[f"{split}_labels"] = torch.tensor([label for _, label in items])  # int64
    return out


# ---------------------------------------------------------------- cache and identity

def cache_path(root: Path) -> Path:
    """Beside the data when that folder is writable, otherwise in the user cache folder."""
    root = root.resolve()
    # root may write anywhere, so os.access alone says yes even for a folder without write
    # bits (CI's read-only copy of shared/): honour the permission bits as well
    if os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / ".cifar10-uint8-cache.pt"
    return user_cache_dir() / (hashlib.sha1(str(root).encode()).hexdigest()[:16] + ".pt")


def user_cache_dir() -> Path:
    """The package's folder in the user cache ($XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar10-tasks"


def load_cifar10(root: Path, download: bool = True, progress: bool = True) -> tuple[dict, str]:
    """({train,test}_{images,labels} and the content digest, source description), from cache
    when valid."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError("a file, not a folder", setting="data_dir", value=root)
    if root.is_dir() and ((root / OFFICIAL_SUBDIR).is_dir() or root.name == OFFICIAL_SUBDIR):
        source = "official"
    elif (root / "train").is_dir() or (root / "test").is_dir():
        source = "image-folder"
    elif root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise UserError(f"holds neither {OFFICIAL_SUBDIR}/ nor train/ and test/ class folders",
                        setting="data_dir", value=root)
    elif not download:
        raise UserError("no CIFAR-10 there", setting="data_dir", value=root)
    else:
        download_official(root)
        source = "official"
    # the cache's validity: changes whenever a source file is added, removed, resized or
    # touched (cheap, no decoding)
    files = _official_files(root) if source == "official" else \
        [p for items in _image_folder_files(root).values() for p, _ in items]
    fingerprint = hashlib.sha1(f"v{CACHE_VERSION}:{source}".encode())
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        fingerprint.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    fingerprint = fingerprint.hexdigest()
    cache = cache_path(root)
    data = load_cache(cache)
    data = data if isinstance(data, dict) else {}
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    tensors = [data.get(key) for key in keys]
    if not (data.get("fingerprint") == fingerprint and isinstance(data.get("digest"), str)
            and all(isinstance(t, torch.Tensor) for t in tensors)
            and all(x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and 0 < len(x) == len(y)
                    for x, y in (tensors[:2], tensors[2:]))):
        data = _decode_official(root) if source == "official" \
            else _decode_image_folder(root, progress)
        # what the data is: the same pixels and labels in another folder, or named by
        # another path, have the same digest
        digest = hashlib.sha1()
        for key in keys:
            digest.update(data[key].numpy().tobytes())  # in C order, whatever the strides
        data["fingerprint"], data["digest"] = fingerprint, digest.hexdigest()[:16]
        # an optimisation: a full disk never fails a run
        save_torch(data, cache, if_unwritable="could not write the CIFAR-10 cache")
    del data["fingerprint"]
    return data, f"{source}:{root}"


# ---------------------------------------------------------------- splits

def stratified_split(labels: torch.Tensor, fraction: float, seed: int):
    """Indices (rest, held_out): `fraction` of every class held out, fixed by the seed."""
    g = generator(seed)
    rest, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = round(len(idx) * fraction)
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """At most n indices, as equal a share per class as possible, fixed by the seed."""
    if n >= len(labels):
        return torch.arange(len(labels))
    g = generator(seed, offset=1)
    classes = labels.unique().tolist()
    share, extra = divmod(n, len(classes))
    chosen = []
    for i, c in enumerate(classes):
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)][:share + (i < extra)])
    return torch.cat(chosen).sort().values


def cifar10_splits(data_dir, seed: int = 0, subset: int | None = None, download: bool = True,
                   progress: bool = True) -> CIFAR10Splits:
    data, source = load_cifar10(resolve_data_dir(data_dir), download=download, progress=progress)
    train_idx, val_idx = stratified_split(data["train_labels"], VALIDATION_FRACTION, seed)
    splits = {"train": Split(data["train_images"][train_idx], data["train_labels"][train_idx]),
              "val": Split(data["train_images"][val_idx], data["train_labels"][val_idx]),
              "test": Split(data["test_images"], data["test_labels"])}
    if subset is not None:
        for name, split in splits.items():
            keep = balanced_subset(split.labels, subset, seed)
            splits[name] = Split(split.images[keep], split.labels[keep])
    empty = [name for name, split in splits.items() if not len(split)]
    if empty:  # a tiny data set: early stopping and the final table would score nothing
        raise UserError(f"{source}: the {' and '.join(empty)} split would be empty: too few "
                        f"images per class", setting="subset", value=subset)
    return CIFAR10Splits(**splits, source=source, digest=data["digest"])


# ---------------------------------------------------------------- augmentation

class BatchAugment(nn.Module):
    """Augmentation of a float batch in [0, 1], random parameters per image: flip, rotation,
    translation and noise are a few tensor ops each (no per-image Python); colour jitter comes
    from kornia, which torchvision does not offer per image."""

    def __init__(self, config: AugmentConfig):
        super().__init__()
        self.config = config
        self.jitter = nn.Identity()
        if config.hue or config.saturation:
            import kornia.augmentation as K
            self.jitter = K.ColorJitter(brightness=0.0, contrast=0.0,
                                        saturation=config.saturation, hue=config.hue, p=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        n, _, h, w = x.shape
        if c.hflip:
            x = torch.where(torch.rand(n, 1, 1, 1, device=x.device) < 0.5, x.flip(-1), x)
        if c.rotate_degrees or c.translate_px:
            # rotate about the centre and translate; uncovered pixels are black, as in
            # torchvision's RandomRotation, or mirrored from the image (translate_reflect)
            angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(c.rotate_degrees)
            cos, sin = angle.cos(), angle.sin()
            # affine_grid maps output to input coordinates in [-1, 1]; a whole-pixel shift
            # is 2/size
            shift = torch.randint(-c.translate_px, c.translate_px + 1, (n, 2), device=x.device)
            theta = torch.stack([cos, -sin, shift[:, 0] * 2.0 / w,
                                 sin, cos, shift[:, 1] * 2.0 / h], dim=1).view(n, 2, 3)
            grid = F.affine_grid(theta.to(x.dtype), x.shape, align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", align_corners=False,
                              padding_mode="reflection" if c.translate_reflect else "zeros")
        x = self.jitter(x)
        if c.noise_std:
            x = (x + c.noise_std * torch.randn_like(x)).clamp_(0.0, 1.0)
        return x


# ---------------------------------------------------------------- the loader

def normalize(x: torch.Tensor, normalization, channels_last: bool = True) -> torch.Tensor:
    """Images in [0, 1] (or uint8) -> (x - mean) / std per channel, channels_last for the
    convolutions (faster on CPU and GPU alike)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean, std = torch.tensor(normalization, device=x.device).view(2, 1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class TensorLoader:
    """Iterates (images, labels) batches.

    train=True: reshuffled each epoch from (seed, epoch) alone, so a resumed run sees the same
    order; the last incomplete batch is dropped. Under DDP every rank takes a disjoint,
    equally long shard of each epoch (as DistributedSampler does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 device, train: bool, augment: AugmentConfig | None = None,
                 normalization=CIFAR_NORMALIZATION, resize: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size = batch_size
        self.train = train
        # augmentation is training's alone
        self.augment = BatchAugment(augment) if train and augment is not None \
            and augment.active else None
        self.normalization = normalization
        self.resize = resize
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)  # this rank's shard: equal lengths keep the ranks in lockstep
        if self.world_size > 1:
            n = -(-n // self.world_size) if self.train \
                else len(range(self.rank, n, self.world_size))
        return n // self.batch_size if self.train and n >= self.batch_size \
            else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """The images this rank is given this epoch, in order: shuffled by (seed, epoch) when
        training, and under torchrun a disjoint shard of them."""
        n = len(self.labels)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) \
            if self.train else torch.arange(n)
        if self.world_size > 1:
            if self.train:  # padded with its own start to the length __len__ counts
                order = order.repeat(2)[: -(-n // self.world_size) * self.world_size]
            order = order[self.rank::self.world_size]
        return order

    def batches(self, start: int = 0):
        """Yield batches from batch number `start` on (resuming mid-epoch skips the rest)."""
        order = self.order().to(self.images.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx].float().div_(255)
            if self.augment is not None:
                x = self.augment(x)
            if self.resize:
                x = F.interpolate(x, size=self.resize, mode="bilinear")
            yield normalize(x, self.normalization), self.labels[idx]

    __iter__ = batches

"""CIFAR-10 from either source (torchvision's official batches or an image folder), decoded
once to uint8 tensors, cached, checked and split; the loader that serves batches from tensors
kept on the training device (airbench's, not a per-image DataLoader); batched augmentation."""
from __future__ import annotations

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
                      SPEEDRUN_NORMALIZATION, AtLeast0, AugmentConfig, Count, Flag, Fraction,
                      Positive, WholeAtLeast0)
from .system import epoch_generator, generator

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # CIFAR-10's label order (batches.meta)
NUM_CLASSES = len(CLASSES)
DEFAULT_DATA_DIR = "data/cifar10"
OFFICIAL_SUBDIR = "cifar-10-batches-py"
CACHE_VERSION = 4  # 3: 16-bit greyscale scaled, not clipped to white; 4: EXIF orientation,
# transparency over white, 32-bit integers of 8-bit values, a TIFF's declared width
VALIDATION_FRACTION = 0.1  # starter code: 45,000 train / 5,000 validation
# what unpickling a damaged official batch can raise
BAD_PICKLE = (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError,
              IndexError, OSError, RuntimeError)


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
    return Path(arg or os.environ.get("CIFAR10_DIR") or DEFAULT_DATA_DIR).expanduser()


def detect_source(root: Path) -> str | None:
    if (root / OFFICIAL_SUBDIR).is_dir() or root.name == OFFICIAL_SUBDIR:
        return "official"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "image-folder"
    return None


# ---------------------------------------------------------------- official batches (torchvision)

def _official_root(root: Path) -> Path:
    return root.parent if root.name == OFFICIAL_SUBDIR else root


def _official_files(root: Path) -> list[Path]:
    from torchvision.datasets import CIFAR10
    folder = _official_root(root) / OFFICIAL_SUBDIR
    return [folder / name for name, _ in CIFAR10.train_list + CIFAR10.test_list]


def _decode_official(root: Path) -> dict:
    from torchvision.datasets import CIFAR10

    class _PresentCIFAR10(CIFAR10):
        # torchvision checks the md5 of every batch at each load; the download path already
        # verifies the archive, and a damaged batch fails to unpickle below, so presence suffices.
        def _check_integrity(self):
            return all(p.is_file() for p in _official_files(root))

        def _load_meta(self):  # md5-checked too; the class order is CIFAR-10's anyway
            self.classes = list(CLASSES)

    out = {}
    for split, train in (("train", True), ("test", False)):
        missing = [p.name for p in _official_files(root) if not p.is_file()]
        if missing:
            raise UserError(f"{root / OFFICIAL_SUBDIR} is missing {', '.join(missing)}; delete "
                            "the folder to download CIFAR-10 again", value=root)
        try:
            ds = _PresentCIFAR10(str(_official_root(root)), train=train, download=False)
        except BAD_PICKLE as err:
            raise UserError(f"cannot read the CIFAR-10 batches in {root} ({type(err).__name__}); "
                            "delete the folder to download CIFAR-10 again", value=root) from None
        images, labels = ds.data, ds.targets
        batches = f"the CIFAR-10 {split} batches in {root}"
        if getattr(images, "shape", None) is None or images.shape[1:] != (32, 32, 3) \
                or len(labels) != len(images):
            raise UserError(f"{batches} hold {len(labels)} labels for images of shape "
                            f"{getattr(images, 'shape', '?')}; expected one label per 32x32 "
                            "image", value=root)
        if not len(images):  # checked here: the split would fail on it first (torch.cat)
            raise UserError(f"{batches} hold no images; delete the folder to download "
                            "CIFAR-10 again", value=root)
        out[f"{split}_images"] = _uint8_pixels(images, f"{batches} hold", root) \
            .permute(0, 3, 1, 2).contiguous()
        out[f"{split}_labels"] = _class_labels(labels, batches, root)
    return out


def _class_labels(labels, batches: str, root: Path) -> torch.Tensor:
    """The batches' labels as int64, each a whole number in 0-9; a float that is whole (1.0)
    counts as that number, any other (1.5) is refused rather than cut to one."""
    try:
        values = np.asarray(labels)
    except ValueError:  # a ragged list: numpy refuses to make one array of it
        values = np.asarray(labels, dtype=object)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise UserError(f"{batches} hold labels of type {values.dtype} (shape {values.shape}); "
                        f"expected whole numbers 0-{NUM_CLASSES - 1}", value=root)
    if values.dtype.kind == "f":
        fractional = values[~(np.isfinite(values) & (values == np.floor(values)))]
        if len(fractional):
            raise UserError(f"{batches} hold labels that are not whole numbers (such as "
                            f"{fractional[0]}); expected 0-{NUM_CLASSES - 1}", value=root)
    if len(values) and not (0 <= values.min() and values.max() < NUM_CLASSES):
        raise UserError(f"{batches} hold labels outside 0-{NUM_CLASSES - 1} "
                        f"({values.min()}..{values.max()})", value=root)
    return torch.from_numpy(values.astype(np.int64))


def _uint8_pixels(pixels: np.ndarray, holder: str, value) -> torch.Tensor:
    """The one way decoded pixels of either source become a tensor: only as uint8.

    Anything else is refused, even integers that all lie in 0-255: CIFAR-10's batches are
    uint8, so another type means the file was written by something else, whose scale cannot
    be known (0-255 in int64, 0-1 in float, 16 bits); guessing it would train on wrong data."""
    if pixels.dtype != np.uint8:
        spread = f" from {pixels.min()} to {pixels.max()}" \
            if pixels.size and pixels.dtype.kind in "iuf" else ""
        raise UserError(f"{holder} {pixels.dtype} pixels{spread}; expected uint8 (0-255)",
                        value=value)
    return torch.from_numpy(pixels)


def download_official(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    # the folders this attempt creates, deepest first: a failed one removes them again
    created = [p for p in (root, *root.parents) if p.name not in ("", "..") and not p.exists()]
    downloaded = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
        downloaded = True
    except (OSError, RuntimeError, ValueError, tarfile.TarError,
            http.client.HTTPException) as err:
        # no network, a refused or cut connection, a corrupt archive, a full disk
        raise UserError(f"CIFAR-10 is not in {root} and downloading it failed "
                        f"({' '.join(str(err).split())[:200]}); give a folder holding "
                        f"{OFFICIAL_SUBDIR}/ or train/<class>/ and test/<class>/ images",
                        setting="data_dir", value=root) from None
    finally:  # failed or interrupted: the folders this attempt made go again
        if not downloaded:
            for folder in created:
                try:
                    folder.rmdir()  # empty ones only: one holding a partial download stays
                except OSError:
                    pass


# ---------------------------------------------------------------- image folder

def _class_folders(split_dir: Path):
    present = {p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    missing = [c for c in CLASSES if c not in present]
    extra = sorted(present - set(CLASSES))
    if missing or extra:
        parts = (["missing class folders: " + ", ".join(missing)] if missing else []) + \
                (["unexpected folders: " + ", ".join(extra)] if extra else [])
        raise UserError(f"{split_dir}: {'; '.join(parts)} (expected exactly the 10 CIFAR-10 "
                        f"classes: {', '.join(CLASSES)})", value=split_dir)


def _image_folder_files(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """{'train': [(path, label), ...], 'test': [...]}, checking the class folders."""
    files = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"{root} has no {split}/ folder; an image-folder CIFAR-10 needs "
                            "train/<class>/ and test/<class>/", value=root)
        _class_folders(split_dir)
        items = []
        for label, name in enumerate(CLASSES):
            paths = sorted(_files_below(split_dir / name))
            if not paths:
                raise UserError(f"class folder {split_dir / name} holds no images",
                                value=split_dir / name)
            items += [(p, label) for p in paths]
        files[split] = items
    return files


def _files_below(folder: Path) -> list[Path]:
    """Every file below a class folder, at any depth, as torchvision's ImageFolder reads one
    (os.walk, links followed); a file in a sub-folder is as much the class's image as one
    beside it, and skipping it would drop data without a word. Hidden files and folders are
    left out (.DS_Store, .ipynb_checkpoints' copies); a link to a folder already read is not
    followed, so a link back up the tree cannot loop."""
    files, seen = [], set()
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(parent))
        subfolders[:] = [d for d in subfolders if not d.startswith(".")
                         and os.path.realpath(os.path.join(parent, d)) not in seen]
        files += [Path(parent, n) for n in names if not n.startswith(".")
                  and os.path.isfile(os.path.join(parent, n))]
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
    bits = _declared_bits(im)  # from the file's header, which the turned copy no longer has
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith(("I", "F")):
        return _integer_grey(im, bits, path)
    if im.has_transparency_data:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB"))
    return np.array(im.convert("RGB"))


def _declared_bits(im: Image.Image) -> int | None:
    """The width an integer image's file declares for its samples' brightness scale; None
    where it declares none (32-bit integers, an image made in memory from int32)."""
    if not im.mode.startswith("I"):
        return None
    if im.format == "TIFF":
        declared = im.tag_v2.get(258)  # BitsPerSample: (12,), (16,), (32,)
        bits = declared[0] if isinstance(declared, tuple) else declared
        return bits if isinstance(bits, int) and 8 < bits <= 16 else None
    if im.format in ("PNG", "PPM") or im.mode.startswith("I;16"):
        # a PNG holds at most 16 bits (older Pillow opened them as mode I); Pillow scales a
        # PGM's maxval onto 0-65535 itself
        return 16
    return None


def _integer_grey(im: Image.Image, bits: int | None, path) -> np.ndarray:
    samples = np.asarray(im)  # read as they are only here: the 60,000 8-bit images are not
    if samples.ndim == 2 and samples.dtype.kind in "iu" and samples.size \
            and samples.min() >= 0:
        top = int(samples.max())
        scale = bits or (8 if top <= 0xFF else 16 if top <= 0xFFFF else None)
        if scale is not None and top < 2 ** scale:
            grey = (samples >> (scale - 8)).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
    spread = f" from {samples.min()} to {samples.max()}" if samples.size else ""
    declared = f" (its file declares {bits} bits)" if bits else ""
    raise UserError(f"image {path} has mode {im.mode} pixels{spread}{declared}, which do not "
                    "map onto 0-255; save it with 8 or 16 bits per channel", value=path)


def read_image(path, size: tuple[int, int] | None = (32, 32),
               setting: str | None = None) -> torch.Tensor:
    """An image file -> (3, H, W) uint8, decoded by its mode (decoded_rgb). With `size` (a
    CIFAR-10 image's 32x32 by default) the size is checked from the header, before any pixel
    is decoded; with None (a photograph: predict.py, task4bc.py) any size up to PIL's limit is
    read, also checked before decoding. `setting`: the option that named the file, for the
    error's words."""
    def refused(problem: str) -> UserError:
        if setting is not None:
            return UserError(f"cannot be read as an image ({problem})", setting=setting,
                             value=path)
        return UserError(f"cannot read image {path}: {problem}", value=path)
    try:
        with warnings.catch_warnings():
            # PIL warns of a large header on its own; the checks below refuse it in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # a damaged EXIF block reads as no orientation (what a viewer shows); the pixels
            # are intact, and a warning would be two more lines on stderr
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            with Image.open(path) as im:
                if size is not None and im.size != size:
                    raise UserError(f"image {path} is {im.size[0]}x{im.size[1]}, CIFAR-10 "
                                    f"images must be {size[0]}x{size[1]}", value=path)
                if im.width * im.height > Image.MAX_IMAGE_PIXELS:
                    raise refused(f"it declares {im.width}x{im.height} pixels, more than a "
                                  "photograph needs")
                pixels = decoded_rgb(im, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise refused(err.strerror if isinstance(err, OSError) and err.strerror
                      else " ".join(str(err).split())[:200]) from None  # not the path again
    return _uint8_pixels(pixels, f"image {path} holds", path).permute(2, 0, 1)


def _decode_image_folder(root: Path, progress: bool) -> dict:
    from tqdm import tqdm
    out = {}
    for split, items in _image_folder_files(root).items():
        images = torch.empty((len(items), 3, 32, 32), dtype=torch.uint8)
        for i, (path, _) in enumerate(tqdm(items, desc=f"decoding {split} images", unit="img",
                                           disable=not progress, mininterval=1.0)):
            images[i] = read_image(path)
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return out


# ---------------------------------------------------------------- cache and identity

def _fingerprint(root: Path, source: str) -> str:
    """Changes whenever a source file is added, removed, resized or touched (the cache's
    validity: cheap, no decoding)."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{source}".encode())
    if source == "official":
        paths = _official_files(root)
    else:
        paths = [p for items in _image_folder_files(root).values() for p, _ in items]
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p.relative_to(root) if p.is_relative_to(root) else p}:{st.st_size}:"
                 f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def content_digest(data: dict) -> str:
    """What the data is: a digest of the decoded pixels and labels (the same data in another
    folder, or named by another path, has the same digest)."""
    h = hashlib.sha1()
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        h.update(data[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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


def _cache_is_valid(data, fingerprint: str) -> bool:
    splits = ("train", "test")
    return (isinstance(data, dict) and data.get("fingerprint") == fingerprint
            and isinstance(data.get("digest"), str)
            and all(isinstance(data.get(f"{s}_{k}"), torch.Tensor)
                    for s in splits for k in ("images", "labels"))
            and all(data[f"{s}_images"].dtype == torch.uint8
                    and data[f"{s}_images"].shape[1:] == (3, 32, 32)
                    and 0 < len(data[f"{s}_images"]) == len(data[f"{s}_labels"])
                    for s in splits))


def _load_cache(path: Path, fingerprint: str) -> dict | None:
    data = load_cache(path)
    return data if _cache_is_valid(data, fingerprint) else None


def load_cifar10(root: Path, download: bool = True, progress: bool = True) -> tuple[dict, str]:
    """({train,test}_{images,labels} and the content digest, source description), from cache
    when valid."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError("a file, not a folder", setting="data_dir", value=root)
    source = detect_source(root) if root.is_dir() else None
    if source is None:
        if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise UserError(f"holds neither {OFFICIAL_SUBDIR}/ nor train/ and test/ class folders",
                            setting="data_dir", value=root)
        if not download:
            raise UserError("no CIFAR-10 there", setting="data_dir", value=root)
        download_official(root)
        source = "official"
    fingerprint = _fingerprint(root, source)
    cache = cache_path(root)
    data = _load_cache(cache, fingerprint)
    if data is None:
        data = _decode_official(root) if source == "official" else _decode_image_folder(root, progress)
        data["fingerprint"], data["digest"] = fingerprint, content_digest(data)
        # an optimisation: a full disk never fails a run
        save_torch(data, cache, if_unwritable="could not write the CIFAR-10 cache")
    return {k: v for k, v in data.items() if k != "fingerprint"}, f"{source}:{root}"


# ---------------------------------------------------------------- splits

def stratified_split(labels: torch.Tensor, fraction: float, seed: int):
    """Indices (rest, held_out): `fraction` of every class held out, fixed by the seed."""
    g = generator(seed)
    rest, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = int(round(len(idx) * fraction))
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """At most n indices, as equal a share per class as possible, fixed by the seed."""
    if n >= len(labels):
        return torch.arange(len(labels))
    g = generator(seed, offset=1)
    classes = labels.unique().tolist()
    per_class = [(labels == c).nonzero().flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    share, extra = divmod(n, len(classes))
    chosen = [idx[: share + (1 if i < extra else 0)] for i, idx in enumerate(per_class)]
    return torch.cat(chosen).sort().values


def cifar10_splits(data_dir, seed: int = 0, subset: int | None = None,
                   val_fraction: float = VALIDATION_FRACTION, download: bool = True,
                   progress: bool = True) -> CIFAR10Splits:
    data, source = load_cifar10(resolve_data_dir(data_dir), download=download, progress=progress)
    train_idx, val_idx = stratified_split(data["train_labels"], val_fraction, seed)
    parts = {
        "train": (data["train_images"][train_idx], data["train_labels"][train_idx]),
        "val": (data["train_images"][val_idx], data["train_labels"][val_idx]),
        "test": (data["test_images"], data["test_labels"]),
    }
    if subset is not None:
        for name, (x, y) in parts.items():
            keep = balanced_subset(y, subset, seed)
            parts[name] = (x[keep], y[keep])
    empty = [name for name, (_, y) in parts.items() if len(y) == 0]
    if empty:  # a tiny data set: early stopping and the final table would score nothing
        raise UserError(f"{source}: the {' and '.join(empty)} split would be empty: too few "
                        f"images per class", setting="subset", value=subset)
    return CIFAR10Splits(**{k: Split(*v) for k, v in parts.items()}, source=source,
                         digest=data["digest"])


# ---------------------------------------------------------------- augmentation

class BatchAugment(nn.Module):
    """Augmentation of a float batch in [0, 1], random parameters per image: flip, rotation,
    translation and noise are a few tensor ops each (no per-image Python); colour jitter comes
    from kornia, which torchvision does not offer per image."""

    def __init__(self, config: AugmentConfig):
        super().__init__()
        self.config = config
        self.jitter = None
        if config.hue or config.saturation:
            import kornia.augmentation as K
            self.jitter = K.ColorJitter(brightness=0.0, contrast=0.0,
                                        saturation=config.saturation, hue=config.hue, p=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        n = x.shape[0]
        if c.hflip:
            flip = torch.rand(n, device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if c.rotate_degrees or c.translate_px:
            x = self._affine(x)
        if self.jitter is not None:
            x = self.jitter(x)
        if c.noise_std:
            x = (x + c.noise_std * torch.randn_like(x)).clamp_(0.0, 1.0)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate about the centre and translate; uncovered pixels are black, as in
        torchvision's RandomRotation, or mirrored from the image (translate_reflect)."""
        c = self.config
        n, _, h, w = x.shape
        angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(c.rotate_degrees)
        cos, sin = angle.cos(), angle.sin()
        # affine_grid maps output to input coordinates in [-1, 1]; a whole-pixel shift is 2/size
        shift = torch.randint(-c.translate_px, c.translate_px + 1, (n, 2), device=x.device)
        theta = torch.stack([
            torch.stack([cos, -sin, shift[:, 0] * 2.0 / w], dim=1),
            torch.stack([sin, cos, shift[:, 1] * 2.0 / h], dim=1),
        ], dim=1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=False,
                             padding_mode="reflection" if c.translate_reflect else "zeros")


# ---------------------------------------------------------------- the loader

def normalize(x: torch.Tensor, normalization, channels_last: bool = True) -> torch.Tensor:
    """Images in [0, 1] (or uint8) -> (x - mean) / std per channel, channels_last for the
    convolutions (faster on CPU and GPU alike)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in normalization)
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
                 rank: int = 0, world_size: int = 1, channels_last: bool = True):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.train = train
        self.augment = BatchAugment(augment) if augment is not None and augment.active else None
        self.normalization = normalization
        self.resize = resize
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.train:  # equal shard lengths keep the ranks' steps in lockstep
                per_rank = -(-n // self.world_size)
                order = torch.cat([order, order[: per_rank * self.world_size - n]])
            order = order[self.rank::self.world_size]
        return order

    def _shard_size(self) -> int:
        """len(self._indices()) without drawing the permutation."""
        n = len(self.labels)
        if self.world_size == 1:
            return n
        if self.train:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        if self.train and n >= self.batch_size:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def batches(self, start: int = 0):
        """Yield batches from batch number `start` on (resuming mid-epoch skips the rest)."""
        order = self._indices().to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.prepare(self.images[idx]), self.labels[idx]

    __iter__ = batches

    def prepare(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = images_uint8.float().div_(255)
        if self.train and self.augment is not None:
            x = self.augment(x)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False)
        return normalize(x, self.normalization, self.channels_last)

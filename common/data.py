"""CIFAR-10 from either source (torchvision's official batches or an image folder), decoded
once to uint8 tensors, cached, and split into train / validation / test."""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .seeding import generator

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # CIFAR-10's label order (batches.meta)
DEFAULT_DATA_DIR = "data/cifar10"
OFFICIAL_SUBDIR = "cifar-10-batches-py"
CACHE_VERSION = 1
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


def resolve_data_dir(arg: str | Path | None) -> Path:
    """--data-dir, else $CIFAR10_DIR, else ./data/cifar10."""
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
        try:
            ds = _PresentCIFAR10(str(_official_root(root)), train=train, download=False)
        except RuntimeError:
            missing = [p.name for p in _official_files(root) if not p.is_file()]
            raise UserError(f"{root / OFFICIAL_SUBDIR} is missing {', '.join(missing)}; "
                            "delete the folder to download CIFAR-10 again") from None
        except Exception as err:  # a damaged pickle: many possible exception types
            raise UserError(f"cannot read the CIFAR-10 batches in {root}: {err}; "
                            "delete the folder to download CIFAR-10 again") from None
        out[f"{split}_images"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_labels"] = torch.tensor(ds.targets, dtype=torch.int64)
    return out


def download_official(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except OSError as err:
        raise UserError(f"CIFAR-10 is not in {root} and downloading it failed ({err}); "
                        "pass --data-dir (or set CIFAR10_DIR) to a folder holding "
                        f"{OFFICIAL_SUBDIR}/ or train/<class>/ and test/<class>/ images") from None
    except Exception as err:
        raise UserError(f"downloading CIFAR-10 into {root} failed ({err}); pass --data-dir "
                        "(or set CIFAR10_DIR) to a folder that already holds it") from None


# ---------------------------------------------------------------- image folder

def _image_folder_files(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """{'train': [(path, label), ...], 'test': [...]}, checking the class folders."""
    files = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"{root} has no {split}/ folder; an image-folder CIFAR-10 needs "
                            "train/<class>/ and test/<class>/")
        present = {p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
        missing = [c for c in CLASSES if c not in present]
        extra = sorted(present - set(CLASSES))
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing class folders: " + ", ".join(missing))
            if extra:
                parts.append("unexpected folders: " + ", ".join(extra))
            raise UserError(f"{split_dir}: {'; '.join(parts)} (expected exactly the 10 CIFAR-10 "
                            f"classes: {', '.join(CLASSES)})")
        items = []
        for label, name in enumerate(CLASSES):
            paths = sorted(p for p in (split_dir / name).iterdir()
                           if p.is_file() and not p.name.startswith("."))
            if not paths:
                raise UserError(f"class folder {split_dir / name} holds no images")
            items += [(p, label) for p in paths]
        files[split] = items
    return files


def _decode_image_folder(root: Path, progress: bool) -> dict:
    import numpy as np
    from PIL import Image  # torchvision.io's decoders are deprecated since 0.29
    from tqdm import tqdm

    out = {}
    for split, items in _image_folder_files(root).items():
        images = torch.empty((len(items), 3, 32, 32), dtype=torch.uint8)
        for i, (path, _) in enumerate(tqdm(items, desc=f"decoding {split} images", unit="img",
                                           disable=not progress, mininterval=1.0)):
            try:
                with Image.open(path) as im:
                    pixels = np.array(im.convert("RGB"))
            except Exception as err:
                raise UserError(f"cannot read image {path}: {err}".splitlines()[0]) from None
            if pixels.shape != (32, 32, 3):
                raise UserError(f"image {path} is {pixels.shape[1]}x{pixels.shape[0]}, "
                                "CIFAR-10 images must be 32x32")
            images[i] = torch.from_numpy(pixels).permute(2, 0, 1)
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return out


# ---------------------------------------------------------------- cache

def _fingerprint(root: Path, source: str) -> str:
    """Changes whenever a source file is added, removed, resized or touched."""
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


def cache_path(root: Path) -> Path:
    """Beside the data when that folder is writable, otherwise in the user cache folder."""
    root = root.resolve()
    # root may write anywhere, so os.access alone says yes even for a folder without write
    # bits (CI's read-only copy of shared/): honour the permission bits as well
    if os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / ".cifar10-uint8-cache.pt"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cifar10-tasks" / (hashlib.sha1(str(root).encode()).hexdigest()[:16] + ".pt")


def _load_cache(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, weights_only=True)
        ok = (data.get("fingerprint") == fingerprint
              and all(data[f"{s}_images"].dtype == torch.uint8
                      and data[f"{s}_images"].shape[1:] == (3, 32, 32)
                      and len(data[f"{s}_images"]) == len(data[f"{s}_labels"])
                      for s in ("train", "test")))
        return data if ok else None
    except Exception:  # corrupt or foreign file: rebuild rather than trust it
        return None


def load_cifar10(root: Path, download: bool = True, progress: bool = True) -> tuple[dict, str]:
    """Return ({train,test}_{images,labels}, source description), from cache when valid."""
    from .io import save_torch

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a folder; point --data-dir (or CIFAR10_DIR) at "
                        "the CIFAR-10 folder")
    source = detect_source(root) if root.is_dir() else None
    if source is None:
        if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise UserError(f"{root} holds neither {OFFICIAL_SUBDIR}/ nor train/ and test/ class "
                            "folders; point --data-dir (or CIFAR10_DIR) at CIFAR-10")
        if not download:
            raise UserError(f"no CIFAR-10 in {root}; pass --data-dir (or set CIFAR10_DIR) to a "
                            "folder holding it")
        download_official(root)
        source = "official"
    fingerprint = _fingerprint(root, source)
    cache = cache_path(root)
    data = _load_cache(cache, fingerprint)
    if data is None:
        data = _decode_official(root) if source == "official" else _decode_image_folder(root, progress)
        data["fingerprint"] = fingerprint
        try:
            save_torch(data, cache)
        except Exception as err:  # a cache is an optimisation: a full disk never fails a run
            warnings.warn(f"could not write the CIFAR-10 cache {cache}: {err}".splitlines()[0])
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
                        f"images per class (a larger --subset or data set)")
    return CIFAR10Splits(**{k: Split(*v) for k, v in parts.items()}, source=source)

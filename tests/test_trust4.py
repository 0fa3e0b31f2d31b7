"""Trust, fourth round (issue 38): images read as a viewer shows them (every integer mode on
the scale its file declares, transparency, EXIF orientation, other modes and containers),
official batches holding no images, a `tensorboard` path that cannot be a folder, and a signal
at the end of training that still lets the script print its table."""
from __future__ import annotations

import pickle
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import api
from common.data import CLASSES, load_cifar10, read_image
from common.errors import Interrupted
from conftest import args, interrupt_in, load_script, metrics, one_error_line, run, \
    write_official

task2 = load_script("task2")
task3 = load_script("task3")
CACHE_NAME = ".cifar10-uint8-cache.pt"
PER_CLASS = 40  # conftest's fake training set: 40 images a class, files 0000..0039


def private_copy(folder: Path, to: Path) -> Path:
    return shutil.copytree(folder, to, ignore=shutil.ignore_patterns(CACHE_NAME))


def grey_row(values) -> np.ndarray:
    """The first row of an image read by common.data.read_image, as grey values."""
    return values[0].tolist()


# ---------------------------------------------------------------- integer images, by their scale

def tiff12(values: list[int]) -> bytes:
    """A one-row TIFF of 12-bit greyscale samples (BitsPerSample 12, packed as TIFF packs
    them, most significant bit first): Pillow opens it as mode I;16, values 0-4095."""
    bits = "".join(f"{v:012b}" for v in values)
    bits += "0" * (-len(bits) % 8)
    pixels = int(bits, 2).to_bytes(len(bits) // 8, "big")
    tags = [(256, 3, len(values)), (257, 3, 1), (258, 3, 12), (259, 3, 1), (262, 3, 1),
            (273, 4, None), (277, 3, 1), (278, 3, 1), (279, 4, len(pixels))]
    offset = 8 + 2 + 12 * len(tags) + 4  # the pixels follow the one IFD
    entries = b"".join(struct.pack("<HHI", tag, kind, 1)
                       + (struct.pack("<HH", value, 0) if kind == 3 else
                          struct.pack("<I", offset if value is None else value))
                       for tag, kind, value in tags)
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries
            + struct.pack("<I", 0) + pixels)


def pgm(values: list[int], maxval: int) -> bytes:
    """A one-row binary PGM with `maxval` (2 bytes a sample past 255)."""
    return f"P5\n{len(values)} 1\n{maxval}\n".encode() + np.array(values, ">u2").tobytes()


EIGHT_BIT = list(range(0, 256, 17))  # 0, 17, ..., 255: a grey ramp in 8-bit values


@pytest.mark.parametrize("write, expected", [
    # 32-bit integers declare no scale: 8-bit values stay as they are (read as all zeros before)
    (lambda p: Image.fromarray(np.array([EIGHT_BIT], np.int32)).save(p.with_suffix(".tif")),
     EIGHT_BIT),
    # ... and values past 255 are 16-bit ones, as before (65535 -> 255)
    (lambda p: Image.fromarray(np.array([[v * 257 for v in EIGHT_BIT]], np.int32)).save(
        p.with_suffix(".tif")), EIGHT_BIT),
    # a 12-bit TIFF declares its scale: 4095 is white, not 15 (read as 15 before)
    (lambda p: p.with_suffix(".tif").write_bytes(tiff12([4095, 2048, 16, 0])), [255, 128, 1, 0]),
    # 16 bits declared (PNG and TIFF I;16, big-endian TIFF I;16B, PGM of maxval 65535): the
    # top byte, and 8-bit values in a 16-bit file are as dark as every viewer shows them
    (lambda p: Image.fromarray(np.array([[v * 257 for v in EIGHT_BIT]], np.uint16)).save(
        p.with_suffix(".png")), EIGHT_BIT),
    (lambda p: Image.fromarray(np.array([[v * 257 for v in EIGHT_BIT]], ">u2")).save(
        p.with_suffix(".tif")), EIGHT_BIT),
    (lambda p: Image.fromarray(np.array([[255, 40000]], np.uint16)).save(p.with_suffix(".png")),
     [0, 156]),
    (lambda p: p.with_suffix(".pgm").write_bytes(pgm([255, 65535], 65535)), [0, 255]),
    # a PGM of 10-bit values: Pillow scales its maxval onto 16 bits
    (lambda p: p.with_suffix(".pgm").write_bytes(pgm([1023, 512, 0], 1023)), [255, 128, 0]),
], ids=["I-8bit-values", "I-16bit-values", "tiff-12bit", "png-16bit", "tiff-16bit-big-endian",
        "png-16bit-dark", "pgm-16bit", "pgm-10bit"])
def test_integer_images_are_read_on_the_scale_their_file_declares(tmp_path, write, expected):
    write(tmp_path / "image")
    path, = tmp_path.iterdir()
    pixels = read_image(path, size=None)
    assert pixels[0].tolist() == pixels[1].tolist() == pixels[2].tolist()  # grey
    assert grey_row(pixels[0]) == expected


def test_a_32_bit_image_of_8_bit_values_trains_as_its_picture(fake_image_folder, tmp_path):
    """The issue's TIFF: a grey picture in mode I, read through the data's cache."""
    root = private_copy(fake_image_folder, tmp_path / "data")
    picture = np.random.default_rng(3).integers(60, 160, (32, 32)).astype(np.int32)
    (root / "train" / "cat" / "0000.png").unlink()
    Image.fromarray(picture).save(root / "train" / "cat" / "0000.tif")
    loaded, _ = load_cifar10(root, download=False, progress=False)
    image = loaded["train_images"][CLASSES.index("cat") * PER_CLASS]
    assert image[0].tolist() == picture.tolist()
    assert float(image.float().mean()) == pytest.approx(float(picture.mean()))


@pytest.mark.parametrize("samples, words", [
    (np.array([[-1, 200]], np.int32), "mode I pixels from -1 to 200"),
    (np.array([[0, 70000]], np.int32), "mode I pixels from 0 to 70000"),
])
def test_integer_images_past_any_scale_are_one_line_exit_2(fake_image_folder, tmp_path, capsys,
                                                           samples, words):
    root = private_copy(fake_image_folder, tmp_path / "data")
    path = root / "test" / "ship" / "0004.tif"
    Image.fromarray(np.resize(samples, (32, 32)).astype(samples.dtype)).save(path)
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2 and f"image {path} has {words}, which do not map onto 0-255" in line


# ---------------------------------------------------------------- other modes and containers

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255,) * 3, (0,) * 3


def rgba_png(path: Path):
    """Opaque red, transparent (its hidden colour black) and half-transparent blue."""
    Image.fromarray(np.array([[(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 255, 128)]],
                             np.uint8)).save(path, "PNG")


def palette_with_transparency(path: Path, fmt: str):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 0, 0, 0, 255])  # red, black, blue
    image.putdata([0, 1, 2])
    image.save(path, fmt, transparency=1)  # the black entry is transparent


def frames(path: Path, fmt: str):
    """Two frames, red then blue: the first is the picture."""
    first, second = Image.new("RGB", (3, 1), RED), Image.new("RGB", (3, 1), BLUE)
    first.save(path, fmt, save_all=True, append_images=[second])


@pytest.mark.parametrize("write, expected", [
    # transparent pixels over white, as a page shows them (their hidden colour before)
    (rgba_png, [RED, WHITE, (127, 127, 255)]),
    (lambda p: Image.frombytes("LA", (2, 1), bytes([0, 255, 200, 0])).save(p, "PNG"),
     [BLACK, WHITE]),
    (lambda p: palette_with_transparency(p, "PNG"), [RED, WHITE, BLUE]),
    (lambda p: palette_with_transparency(p, "GIF"), [RED, WHITE, BLUE]),
    # modes Pillow converts itself, and the first frame of a file of several
    (lambda p: Image.new("CMYK", (2, 1), (0, 255, 255, 0)).save(p, "TIFF"), [RED, RED]),
    (lambda p: Image.new("RGB", (2, 1), GREEN).convert("YCbCr").save(p, "TIFF"),
     [GREEN, GREEN]),
    (lambda p: Image.fromarray(np.array([[True, False]])).save(p, "PNG"), [WHITE, BLACK]),
    (lambda p: frames(p, "GIF"), [RED] * 3),
    (lambda p: frames(p, "TIFF"), [RED] * 3),
], ids=["RGBA", "LA", "P-transparency-png", "P-transparency-gif", "CMYK", "YCbCr", "1",
        "GIF-frames", "TIFF-pages"])
def test_every_mode_and_container_reads_as_a_viewer_shows_it(tmp_path, write, expected):
    path = tmp_path / "image"
    write(path)
    pixels = read_image(path, size=None).permute(1, 2, 0)[0].tolist()
    assert len(pixels) == len(expected)
    for got, want in zip(pixels, expected):
        assert got == pytest.approx(list(want), abs=3), pixels  # YCbCr and blending round


# ---------------------------------------------------------------- EXIF orientation

def quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Stored: red top left, green top right, blue bottom left, white bottom right."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:height // 2, :width // 2] = RED
    pixels[:height // 2, width // 2:] = GREEN
    pixels[height // 2:, :width // 2] = BLUE
    pixels[height // 2:, width // 2:] = WHITE
    return Image.fromarray(pixels)


def with_orientation(path: Path, image: Image.Image, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    image.save(path, "JPEG", quality=95, exif=exif)
    return path


def shown_quadrants(pixels) -> list[tuple]:
    """The colours at the centres of the top left, top right, bottom left and bottom right
    quarters of a (3, H, W) image."""
    _, h, w = pixels.shape
    return [tuple(pixels[:, y, x].tolist()) for y, x in
            ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4),
             (3 * h // 4, 3 * w // 4))]


# the EXIF tag names how the viewer turns the stored picture: 3 a half turn, 6 a quarter turn
# clockwise (a phone held upright), 8 a quarter turn anticlockwise, 2 a mirror image
@pytest.mark.parametrize("orientation, shape, shown", [
    (1, (32, 64), [RED, GREEN, BLUE, WHITE]),
    (2, (32, 64), [GREEN, RED, WHITE, BLUE]),
    (3, (32, 64), [WHITE, BLUE, GREEN, RED]),
    (6, (64, 32), [BLUE, RED, WHITE, GREEN]),
    (8, (64, 32), [GREEN, WHITE, RED, BLUE]),
])
def test_a_photograph_is_read_as_its_exif_orientation_shows_it(tmp_path, orientation, shape,
                                                               shown):
    path = with_orientation(tmp_path / "photo.jpg", quadrants(), orientation)
    for pixels in (read_image(path, size=None), api.as_tensor(path)):  # task4bc's, predict's
        assert tuple(pixels.shape[1:]) == shape
        for got, want in zip(shown_quadrants(pixels), shown):
            assert got == pytest.approx(want, abs=40), shown_quadrants(pixels)  # JPEG


def test_a_turned_photograph_in_an_image_folder_is_trained_as_shown(fake_image_folder, tmp_path):
    root = private_copy(fake_image_folder, tmp_path / "data")
    (root / "train" / "cat" / "0000.png").unlink()
    with_orientation(root / "train" / "cat" / "0000.jpg", quadrants(32, 32), 6)
    loaded, _ = load_cifar10(root, download=False, progress=False)
    image = loaded["train_images"][CLASSES.index("cat") * PER_CLASS]
    for got, want in zip(shown_quadrants(image), [BLUE, RED, WHITE, GREEN]):
        assert got == pytest.approx(want, abs=40)


def test_a_damaged_exif_block_is_read_as_no_orientation_without_a_word(tmp_path, recwarn):
    path = tmp_path / "photo.jpg"
    quadrants().save(path, "JPEG", quality=95, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    assert tuple(read_image(path, size=None).shape) == (3, 32, 64)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]


# ---------------------------------------------------------------- official batches of no images

def dump_batch(folder: Path, name: str, images: np.ndarray, labels: list):
    """A batch file of (N, 3072) uint8 rows, as the official ones hold them."""
    with open(folder / name, "wb") as f:
        pickle.dump({"data": images, "labels": labels}, f)


NO_IMAGES = np.zeros((0, 3072), np.uint8)
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.mark.parametrize("emptied, split", [
    (TRAIN_BATCHES, "train"),               # torch.cat's traceback, exit 1, before
    (["test_batch"], "test"),               # "the val and test split would be empty", before
    (TRAIN_BATCHES + ["test_batch"], "train"),
])
def test_official_batches_holding_no_images_are_one_line_exit_2(fake_arrays, tmp_path, capsys,
                                                                 emptied, split):
    root = tmp_path / "official"
    write_official(root, *fake_arrays)
    for name in emptied:
        dump_batch(root / "cifar-10-batches-py", name, NO_IMAGES, [])
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    line = one_error_line(err)
    assert code == 2
    assert f"the CIFAR-10 {split} batches in {root} hold no images" in line
    assert not (tmp_path / "out" / "cnn1g").exists()


def test_an_empty_batch_among_others_leaves_the_others_images(fake_arrays, tmp_path):
    """A batch of no images is no image lost: the others are read, whole."""
    (train_x, train_y), test = fake_arrays
    root = tmp_path / "official"
    write_official(root, (train_x, train_y), test)
    whole, _ = load_cifar10(root, download=False, progress=False)
    folder = root / "cifar-10-batches-py"
    with open(folder / "data_batch_3", "rb") as f:
        third = len(pickle.load(f)["labels"])
    dump_batch(folder, "data_batch_3", NO_IMAGES, [])
    loaded, _ = load_cifar10(root, download=False, progress=False)
    assert len(loaded["train_labels"]) == len(train_y) - third > 0
    kept = {bytes(img.numpy()) for img in loaded["train_images"]}
    assert kept < {bytes(img.numpy()) for img in whole["train_images"]}


@pytest.mark.parametrize("empty", ["train/cat", "test/*"])
def test_an_image_folder_with_an_empty_class_or_split_is_one_line_exit_2(fake_image_folder,
                                                                         tmp_path, capsys,
                                                                         empty):
    root = private_copy(fake_image_folder, tmp_path / "data")
    for folder in root.glob(empty):
        for image in folder.iterdir():
            image.unlink()
        (folder / ".DS_Store").write_bytes(b"")  # hidden: not an image
    first = sorted(root.glob(empty))[0]
    code, err = run(task2, args(root, tmp_path / "out"), capsys)
    assert code == 2 and f"class folder {first} holds no images" in one_error_line(err)


# ---------------------------------------------------------------- --tensorboard

def unwritable_folder(path: Path):
    """A folder no one may write to: read-only for a user, immutable for root."""
    path.mkdir()
    path.chmod(0o555)
    subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / "probe").touch()
    except OSError:
        return
    (path / "probe").unlink()
    pytest.skip("this user can write into any folder (root without chattr)")


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("notes"), "a file, not a folder"),
    (lambda p: p.symlink_to(p.parent / "gone"), "which does not exist"),
    (unwritable_folder, "cannot be written to ("),
], ids=["file", "dangling-link", "unwritable"])
def test_a_tensorboard_path_that_cannot_be_its_folder_is_one_line_exit_2_before_training(
        fake_image_folder, tmp_path, capsys, make, words):
    run_dir = tmp_path / "out" / "cnn1g"
    run_dir.mkdir(parents=True)
    board = run_dir / "tensorboard"
    make(board)
    try:
        code, err = run(task2, args(fake_image_folder, tmp_path / "out", "--tensorboard",
                                    "--precision", "fp32"), capsys)
    finally:
        subprocess.run(["chattr", "-i", str(board)], capture_output=True)
        if board.is_dir() and not board.is_symlink():
            board.chmod(0o755)
    line = one_error_line(err)
    assert code == 2
    assert line.startswith(f"error: --tensorboard {board}: ") and words in line
    assert not (run_dir / "checkpoint.pt").exists()  # refused before the first step


# ---------------------------------------------------------------- a signal at the end of training

def run_with_output(script, argv, capsys) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr)."""
    try:
        script.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
@pytest.mark.parametrize("where, after", [("_check", 1), ("final_table", 0)],
                         ids=["last-check", "final-table"])
def test_a_signal_at_the_end_of_training_prints_the_table_then_exits_with_its_code(
        fake_image_folder, tmp_path, capsys, monkeypatch, signum, where, after):
    from common.trainer import Trainer
    # --subset 100 --batch-size 20: 5 steps, checks after steps 2 and 5 (the last, after=1)
    interrupt_in(monkeypatch, Trainer, where, signum=signum, after=after)
    code, out, err = run_with_output(task2, args(fake_image_folder, tmp_path), capsys)
    name = signal.Signals(signum).name
    assert code == 128 + signum
    assert "\nTable 2.b (1.0 epochs" in out and "\nTest  " in out
    assert f"wrote {tmp_path / 'task2_figure1.png'}" in out
    assert err.splitlines()[-1] == (f"{name} received at the end of training: stopped; the "
                                    "runs already finished and their files are kept")
    assert "Traceback" not in err and metrics(tmp_path / "cnn1g")["epochs_completed"] == 1


def test_a_trainer_signalled_in_its_last_check_raises_with_the_finished_runs_metrics(
        tmp_path, monkeypatch):
    """Trainer used directly (not through a script): the signal is raised as before, and it
    carries the run, written; common.run keeps it until the script's table is printed."""
    import torch
    from common.data import TensorLoader
    from common.files import RunDir
    from common.trainer import Trainer
    from conftest import trainer_config
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    loaders = {"train": TensorLoader(images, labels, 10, device="cpu", train=True),
               "val": TensorLoader(images[:20], labels[:20], 20, device="cpu", train=False)}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), loaders,
                      trainer_config(epochs=1, batch_size=10), run_dir=RunDir(tmp_path))
    interrupt_in(monkeypatch, Trainer, "_check", signum=signal.SIGTERM, after=1)  # the last
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert str(stopped.value) == "SIGTERM received at the end of training"
    assert stopped.value.exit_code == 143 and stopped.value.checkpoint is None
    assert stopped.value.result["epochs_completed"] == 1
    assert stopped.value.result == {k: v for k, v in metrics(tmp_path).items()
                                    if k in stopped.value.result}


@pytest.mark.slow
def test_a_signal_at_the_end_of_the_first_run_begins_no_other(fake_image_folder, tmp_path,
                                                              capsys, monkeypatch):
    from common.trainer import Trainer
    interrupt_in(monkeypatch, Trainer, "final_table", signum=signal.SIGTERM)
    code, err = run(task3, args(fake_image_folder, tmp_path, "--precision", "fp32"), capsys)
    assert code == 143 and "SIGTERM received at the end of training" in err
    assert metrics(tmp_path / "model1")["epochs_completed"] == 1
    assert not (tmp_path / "model2").exists()


def test_a_signal_at_the_end_of_api_train_stops_that_call_only(fake_image_folder, tmp_path,
                                                               monkeypatch):
    from common.trainer import Trainer
    settings = dict(data_dir=fake_image_folder, subset=100, batch_size=20, epochs=1,
                    precision="fp32")
    final_table = Trainer.final_table
    interrupt_in(monkeypatch, Trainer, "final_table")
    with pytest.raises(Interrupted, match="SIGINT received at the end of training"):
        api.train("task2", "cnn1g", output_dir=tmp_path / "a", **settings)
    assert metrics(tmp_path / "a" / "cnn1g")["epochs_completed"] == 1
    monkeypatch.setattr(Trainer, "final_table", final_table)
    trained = api.train("task2", "cnn1g", output_dir=tmp_path / "b", **settings)  # none kept
    assert trained.metrics["epochs_completed"] == 1

"""predict.py: a finished run classifies image files with its own preprocessing (top-k lines,
or one JSON document), refuses a bad image or a folder that is not a finished run in one
line (exit 2), and exports its network to ONNX that onnxruntime runs as torch does."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from common import api
from common.config import RunConfig
from common.files import output_file
from common.data import CIFAR_NORMALIZATION, CLASSES, IMAGENET_NORMALIZATION, TensorLoader
from common.models import Model1
from common.recipes import MODEL1, SPEEDRUN
from common.speedrun import SpeedrunNet
from conftest import args, load_script, one_error_line

task2 = load_script("task2")
predict = load_script("predict")
# onnxruntime against torch, fp32 on a CPU: the logits agree within 1e-4 absolute (1.9e-6
# measured on 500 real test images for a task 2 run); docs/extending.md states the same
ONNX_ATOL = 1e-4


def cli(argv, capsys) -> tuple[int, str, str]:
    """predict.py's main(argv) -> (exit code, stdout, stderr)."""
    try:
        predict.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_image_folder, _session_cache):
    """A tiny finished task2 run (one epoch on 100 images), trained once for this module."""
    out = tmp_path_factory.mktemp("predict-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(_session_cache))
        task2.main(args(fake_image_folder, out, "--precision", "fp32"))
    return out / "cnn1g"


@pytest.fixture(scope="module")
def test_images(fake_arrays) -> torch.Tensor:
    """The fake data set's 100 test images as (N, 3, 32, 32) uint8, ten per class in order."""
    return torch.from_numpy(fake_arrays[1][0]).permute(0, 3, 1, 2).contiguous()


def write_pngs(folder, images: torch.Tensor) -> list[str]:
    paths = []
    for i, image in enumerate(images):
        path = folder / f"test{i}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("normalization, image_size", [
    (CIFAR_NORMALIZATION, 32), (IMAGENET_NORMALIZATION, 32), (IMAGENET_NORMALIZATION, 64)])
def test_preprocessing_gives_a_32px_image_what_the_runs_test_loader_gave_it(
        normalization, image_size, test_images):
    images = test_images[:20]
    loader = TensorLoader(images, torch.zeros(20, dtype=torch.long), 20, device="cpu",
                          train=False, normalization=normalization,
                          resize=image_size if image_size != 32 else None)
    (expected, _), = list(loader)
    got = api.Preprocess(normalization, image_size)(images)
    assert got.shape == (20, 3, image_size, image_size)
    assert torch.equal(got, expected)


def test_preprocessing_takes_uint8_float_and_pil_images_alike(test_images):
    images = test_images[:3]
    preprocess = api.Preprocess(CIFAR_NORMALIZATION, 32)
    from_uint8 = preprocess(images)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    assert torch.equal(preprocess(images.float() / 255), from_uint8)
    assert torch.equal(preprocess(pil), from_uint8)
    assert torch.equal(preprocess(pil[0]), from_uint8[:1])
    assert torch.equal(preprocess(images[0]), from_uint8[:1])  # one (3, H, W) image
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        preprocess(images.float())  # 0-255 floats: the caller's slip, not silently rescaled


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 300), value=st.integers(0, 255))
def test_a_uniform_image_of_any_size_becomes_the_same_uniform_run_sized_image(
        height, width, value):
    preprocess = api.Preprocess(IMAGENET_NORMALIZATION, 32)
    image = torch.full((3, height, width), value, dtype=torch.uint8)
    expected = preprocess(torch.full((3, 32, 32), value, dtype=torch.uint8))
    torch.testing.assert_close(preprocess(image), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- classifying

def test_predict_prints_each_images_top_3_with_the_runs_own_probabilities(
        run_dir, test_images, tmp_path, capsys):
    images = test_images[::40]  # three test images of three classes
    paths = write_pngs(tmp_path, images)
    code, out, err = cli(["--run", str(run_dir), *paths], capsys)
    assert code == 0, err
    probabilities = api.load(run_dir).predict(images)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3))
    lines = out.splitlines()
    assert len(lines) == 3
    for line, path, p in zip(lines, paths, probabilities):
        top = p.topk(3)
        shown = [f"{CLASSES[i]} {100 * v:.1f}%" for v, i in zip(top.values, top.indices)]
        assert line == f"{path}: {', '.join(shown)}"


def test_predict_json_is_one_document_with_top_k_likeliest_first(
        run_dir, test_images, tmp_path, capsys):
    paths = write_pngs(tmp_path, test_images[:2])
    code, out, err = cli(["--run", str(run_dir), "--json", "--top-k", "10", *paths], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert document["run"] == str(run_dir) and document["image_size"] == 32
    probabilities = api.load(run_dir).predict(test_images[:2])
    for prediction, path, p in zip(document["predictions"], paths, probabilities):
        assert prediction["image"] == path
        ranked = prediction["top_k"]
        assert sorted(c["class"] for c in ranked) == sorted(CLASSES)  # k = 10: every class
        shown = [c["probability"] for c in ranked]
        assert shown == sorted(shown, reverse=True)
        assert shown == pytest.approx(sorted(p.tolist(), reverse=True), abs=1e-7)


def test_a_larger_image_is_resized_and_classified(run_dir, test_images, tmp_path, capsys):
    # a 32x32 image blown up to 160x96 and saved as JPEG: it is read, shrunk, classified
    big = test_images[0].repeat_interleave(5, 1).repeat_interleave(3, 2)
    path = tmp_path / "big.jpg"
    Image.fromarray(big.permute(1, 2, 0).numpy()).save(path)
    code, out, err = cli(["--run", str(run_dir), "--top-k", "1", str(path)], capsys)
    assert code == 0, err
    assert out.startswith(f"{path}: ") and len(out.splitlines()) == 1
    assert out.split(": ")[1].split()[0] in CLASSES


@pytest.mark.parametrize("bad", ["not_an_image", "missing", "folder", "truncated"])
def test_an_image_that_cannot_be_read_is_one_line_exit_2_and_nothing_printed(
        bad, run_dir, test_images, tmp_path, capsys):
    good = write_pngs(tmp_path, test_images[:1])[0]
    path = tmp_path / f"{bad}.png"
    if bad == "not_an_image":
        path.write_text("hello")
    elif bad == "folder":
        path.mkdir()
    elif bad == "truncated":
        path.write_bytes(open(good, "rb").read()[:200])
    code, out, err = cli(["--run", str(run_dir), good, str(path)], capsys)
    assert code == 2 and out == ""  # the good image first: still nothing printed
    assert one_error_line(err).startswith(f"error: cannot read image {path}")


@pytest.mark.parametrize("damage", ["empty_folder", "output_root", "no_best", "no_metrics",
                                    "bad_config", "missing_folder"])
def test_a_folder_that_is_not_a_finished_run_is_one_line_exit_2(
        damage, run_dir, test_images, tmp_path, capsys):
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    if damage == "empty_folder":
        target = tmp_path / "empty"
        target.mkdir()
    elif damage == "output_root":  # outputs/task2 rather than outputs/task2/cnn1g
        target = tmp_path
    elif damage == "no_best":
        (target / "best.pt").unlink()
    elif damage == "no_metrics":
        (target / "metrics.json").unlink()
    elif damage == "bad_config":
        (target / "config.json").write_text('{"schema_version": 1, "task": 3}')
    elif damage == "missing_folder":
        target = tmp_path / "nowhere"
    image = write_pngs(tmp_path, test_images[:1])[0]
    code, out, err = cli(["--run", str(target), image], capsys)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith("error: ") and str(target) in line
    if damage not in ("bad_config",):
        assert "is not a finished run's folder" in line


@pytest.mark.parametrize("argv, message", [
    (["--top-k", "11", "x.png"], "--top-k 11: must be at most 10"),
    (["--top-k", "0", "x.png"], "must be at least 1"),
    ([], "give images to classify, --export FILE.onnx or --evaluate"),
    (["x.png", "--export", "m.onnx"], "only one of them"),
])
def test_impossible_predict_options_are_one_line_errors(argv, message, run_dir, capsys):
    code, out, err = cli(["--run", str(run_dir), *argv], capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_a_run_is_loaded_with_its_own_config_in_eval_mode(run_dir):
    trained = api.load(run_dir)
    assert not trained.model.training
    assert trained.config == RunConfig.from_dict(json.loads(
        (run_dir / "config.json").read_text()), "config.json")
    assert trained.classes == CLASSES
    assert trained.preprocess == api.Preprocess(CIFAR_NORMALIZATION, 32)
    assert trained.metrics["final"]["test"]["accuracy"] == json.loads(
        (run_dir / "metrics.json").read_text())["final"]["test"]["accuracy"]


# ---------------------------------------------------------------- odd file names

def test_json_names_an_image_whose_name_is_not_utf8_in_strict_utf8_with_escapes(
        run_dir, test_images, tmp_path, capsys):
    path = os.path.join(os.fsdecode(tmp_path), os.fsdecode(b"bad\xff.png"))  # as argv gives it
    Image.fromarray(test_images[0].permute(1, 2, 0).numpy()).save(path)
    code, out, err = cli(["--run", str(run_dir), "--json", path], capsys)
    assert code == 0, err
    out.encode("utf-8")  # strict: no lone surrogate
    name = json.loads(out)["predictions"][0]["image"]
    assert name == f"{tmp_path}/bad\\xff.png"  # the byte as a backslash escape
    name.encode("utf-8")  # the document's text too: a lone "\udcff" escape decodes to a surrogate
    code, out, err = cli(["--run", str(run_dir), path], capsys)
    assert out.startswith(f"{tmp_path}/bad\\xff.png: ")


@pytest.mark.parametrize("name, shown", [("two\nlines.png", "two\\nlines.png"),
                                         ("tab\tand\rreturn.png", "tab\\tand\\rreturn.png"),
                                         ("esc\x1b[31m.png", "esc\\x1b[31m.png"),
                                         ("sep\u2028.png", "sep\\u2028.png"),
                                         ("caf\u00e9 \u732b.png", "caf\u00e9 \u732b.png")])
def test_a_name_holding_a_newline_or_control_character_stays_on_one_text_line(
        name, shown, run_dir, test_images, tmp_path, capsys):
    good, = write_pngs(tmp_path, test_images[:1])
    odd = tmp_path / name
    shutil.copy(good, odd)
    code, out, err = cli(["--run", str(run_dir), str(odd), good], capsys)
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # two images, two lines
    assert lines[0].startswith(f"{tmp_path}/{shown}: ") and lines[1].startswith(f"{good}: ")
    code, out, err = cli(["--run", str(run_dir), "--json", str(odd)], capsys)
    assert json.loads(out)["predictions"][0]["image"] == str(odd)  # JSON escapes it itself


# ---------------------------------------------------------------- where --export writes

def export_error(run_dir, target, capsys) -> str:
    code, out, err = cli(["--run", str(run_dir), "--export", str(target)], capsys)
    assert code == 2 and out == ""
    return one_error_line(err)


@pytest.mark.parametrize("kind", ["existing_folder", "trailing_slash", "link_to_folder"])
def test_export_to_a_folder_is_one_line_exit_2(kind, run_dir, tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    target = {"existing_folder": str(folder), "trailing_slash": f"{tmp_path}/new/",
              "link_to_folder": str(tmp_path / "link.onnx")}[kind]
    if kind == "link_to_folder":
        os.symlink(folder, target)
    line = export_error(run_dir, target, capsys)
    assert line.startswith(f"error: --export {target}: is a folder; give a file name")
    assert list(folder.iterdir()) == [] and not (tmp_path / "new").exists()


def test_export_under_a_file_is_one_line_exit_2(run_dir, tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    line = export_error(run_dir, tmp_path / "notes" / "m.onnx", capsys)
    assert line == (f"error: --export {tmp_path}/notes/m.onnx: {tmp_path}/notes is not a "
                    "folder but a file")
    assert (tmp_path / "notes").read_text() == "mine"


@pytest.mark.parametrize("existing", ["image", "text", "empty"])
def test_export_over_a_file_that_is_not_onnx_refuses_and_keeps_it(
        existing, run_dir, test_images, tmp_path, capsys):
    target = tmp_path / "photo.onnx"
    if existing == "image":
        write_pngs(tmp_path, test_images[:1])
        target = tmp_path / "test0.png"
    elif existing == "text":
        target.write_text("my notes")
    else:
        target.touch()
    before = target.read_bytes()
    line = export_error(run_dir, target, capsys)
    assert line == (f"error: --export {target}: exists and is not an ONNX file; only an ONNX "
                    "file is replaced: remove it or give another name")
    assert target.read_bytes() == before


def test_export_through_a_dangling_link_or_onto_a_pipe_is_refused(run_dir, tmp_path, capsys):
    link = tmp_path / "m.onnx"
    os.symlink(tmp_path / "gone" / "m.onnx", link)
    assert export_error(run_dir, link, capsys) == (
        f"error: --export {link}: is a link to {tmp_path}/gone/m.onnx, which does not exist; "
        "remove the link or give another name")
    assert os.readlink(link) == str(tmp_path / "gone" / "m.onnx")
    pipe = tmp_path / "pipe.onnx"  # as a device would be (/dev/null: not replaced by a file)
    os.mkfifo(pipe)
    assert export_error(run_dir, pipe, capsys) == (
        f"error: --export {pipe}: exists and is not a regular file (a device, a pipe or a "
        "socket)")
    assert pipe.is_fifo()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_export_into_a_folder_without_write_permission_is_one_line_exit_2(
        run_dir, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    assert export_error(run_dir, folder / "sub" / "m.onnx", capsys) == (
        f"error: --export {folder}/sub/m.onnx: cannot write in {folder} (no permission, or a "
        "read-only file system)")


def test_an_onnx_file_or_a_link_to_one_may_be_replaced(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph), str(model))
    assert output_file(model, "export", "an ONNX file", api._is_onnx) == model
    os.symlink(model, tmp_path / "link.onnx")  # written through, as cp does: the link stays
    assert output_file(tmp_path / "link.onnx", "export", "an ONNX file", api._is_onnx) == model
    assert output_file(tmp_path / "new" / "m.onnx", "export", "an ONNX file",
                       api._is_onnx) == tmp_path / "new" / "m.onnx"


# ---------------------------------------------------------------- ONNX

def onnx_logits(path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


@pytest.mark.slow
def test_the_onnx_export_gives_torchs_logits_on_test_images_at_any_batch_size(
        run_dir, test_images, tmp_path, capsys):
    import onnx
    path = tmp_path / "cnn1g.onnx"
    code, out, err = cli(["--run", str(run_dir), "--export", str(path)], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {path}: ")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["classes"].split(",") == list(CLASSES) and meta["image_size"] == "32"
    trained = api.load(run_dir)
    for batch in (test_images, test_images[:1]):  # 100 and 1: the batch is dynamic
        x = trained.preprocess(batch)
        with torch.no_grad():
            expected = trained.model(x)
        torch.testing.assert_close(onnx_logits(path, x), expected, atol=ONNX_ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("model, recipe", [(Model1(), MODEL1), (SpeedrunNet.from_config(SPEEDRUN),
                                                                  SPEEDRUN)],
                         ids=["model1", "speedrun"])
def test_networks_with_batchnorm_export_to_onnx_as_torch_computes_them(
        model, recipe, test_images, tmp_path):
    # untrained but with BatchNorm statistics of real images: eval mode must use them
    model.train()
    with torch.no_grad():
        model(api.Preprocess(CIFAR_NORMALIZATION, 32)(test_images))
    config = RunConfig("test", "run", "model1", recipe)
    trained = api.TrainedRun(model.eval(), api.preprocessing(config), config, {}, tmp_path)
    path = api.export_onnx(trained, tmp_path / "net.onnx")
    x = trained.preprocess(test_images)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(onnx_logits(path, x), expected, atol=ONNX_ATOL, rtol=0)

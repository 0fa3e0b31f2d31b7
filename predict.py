"""Classify images with a trained run, score it on a test split, or export its network to ONNX.

  python predict.py --run outputs/task2/cnn1g cat.png ship.jpg
  python predict.py --run outputs/task3/model1 --top-k 5 --json photos/*.jpg
  python predict.py --run outputs/task3/model1 --evaluate --confusion model1-confusion.csv
  python predict.py --run outputs/task3/model1 --export model1.onnx

The network is rebuilt from the run's config.json with its best check's weights (best.pt).
Each image gets the run's own preprocessing: its pixels scaled to [0, 1], the whole image
resized to the run's image size (32x32, or the size a ResNet18 run trained at) by bilinear
interpolation, antialiased when it shrinks (our choice; the aspect ratio is not kept and
nothing is cropped), then normalised with the run's mean and std. A 32x32 image takes exactly
the steps the run's test images took. --evaluate scores the run's test split (its own data,
subset and seed, or --data-dir's) as the run scored itself: on its own data the accuracy is
metrics.json's exactly. The ONNX file takes the preprocessed batch (any batch size) and gives
the logits; its metadata holds the image size, mean, std and class names.

File names are printed as UTF-8 text: bytes that are not UTF-8 as \\xNN escapes (--json too);
in the text lines, control characters (a newline) as \\n, \\t or \\xNN, one image a line.
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
import json
import os
import sys
import unicodedata

from common import cli
from common.errors import UserError

TOP_K = 3
BATCH = 64  # images classified at once: a few hundred MB at 224 pixels
# written as \n, \r, \t in a text line; other control characters as \xNN or \uNNNN
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def get_args_parser():
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", type=cli.path_text,
                   help="image files (PNG, JPEG, ...: what Pillow reads), any size")
    p.add_argument("--run", required=True, metavar="RUN_DIR", type=cli.path_text,
                   help="a finished run's folder, e.g. outputs/task2/cnn1g (config.json, "
                        "best.pt and metrics.json)")
    p.add_argument("--top-k", type=cli.whole_number(1), default=TOP_K, metavar="K",
                   help=f"how many classes to print per image, most likely first (default: "
                        f"{TOP_K}; at most one per class)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (for programs) instead of text lines")
    p.add_argument("--evaluate", action="store_true",
                   help="score the run on its test split instead of classifying images: "
                        "accuracy, loss and per-class accuracy, as the run scored itself")
    p.add_argument("--data-dir", metavar="DIR", type=cli.path_text, default=None,
                   help="with --evaluate: this CIFAR-10 folder's test split (the run's subset "
                        "and seed) instead of the run's own data (config.json's data_dir)")
    p.add_argument("--confusion", metavar="FILE.csv", type=output_path, default=None,
                   help="with --evaluate: write the confusion matrix there (a row per true "
                        "class, a column per predicted class, and the class's accuracy)")
    p.add_argument("--export", metavar="FILE.onnx", type=output_path, default=None,
                   help="write the run's network as ONNX (torch's dynamo exporter, checked "
                        "with onnx.checker) instead of classifying images; an existing file "
                        "is replaced only if it is an ONNX file")
    return p


def output_path(text: str) -> str:
    """cli.path_text, keeping a final slash: the name is a folder's, which the file's check
    (common.files.output_file) refuses rather than writing a file of that name."""
    path = cli.path_text(text)
    return path + os.sep if text.endswith(os.sep) and not path.endswith(os.sep) else path


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common import api  # noqa: E402
from common.data import CLASSES, read_image  # noqa: E402
from common.files import output_file, save_csv  # noqa: E402
from common.trainer import confusion_rows  # noqa: E402

CONFUSION_HEADER = ",".join(["class", *CLASSES, "accuracy"])  # confusion_rows' columns


def shown(path, one_line: bool = False) -> str:
    """A file name as strict UTF-8 text: the bytes the OS holds (os.fsencode), those that are
    not UTF-8 as \\xNN. one_line: control characters (a newline, an escape) and line
    separators escaped too, so that a name stays on its line."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if not one_line:
        return text
    return "".join(ESCAPES.get(c) or (c.encode("unicode_escape").decode("ascii")
                                      if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c)
                   for c in text)


def top_classes(probabilities, k: int) -> list[list[tuple[str, float]]]:
    """Per image, its k likeliest classes with their probabilities, likeliest first."""
    values, indices = probabilities.topk(k, dim=1)
    return [[(CLASSES[i], float(v)) for v, i in zip(vs, idx)]
            for vs, idx in zip(values.tolist(), indices.tolist())]


def classify(trained: api.TrainedRun, paths: list[str], k: int) -> list[list]:
    """Every image read first (a bad one stops before anything is printed), then classified
    in batches."""
    images = [read_image(path, size=None) for path in paths]
    out = []
    for start in range(0, len(images), BATCH):
        out += top_classes(trained.predict(images[start:start + BATCH]), k)
    return out


def print_predictions(trained: api.TrainedRun, paths: list[str], ranked: list, as_json: bool):
    if as_json:
        print(json.dumps({
            "run": shown(trained.run_dir), "task": trained.config.task,
            "image_size": trained.preprocess.image_size,
            "predictions": [{"image": shown(path), "top_k": [{"class": c, "probability": p}
                                                             for c, p in classes]}
                            for path, classes in zip(paths, ranked)]}, indent=2))
        return
    for path, classes in zip(paths, ranked):
        print(f"{shown(path, one_line=True)}: "
              + ", ".join(f"{c} {100 * p:.1f}%" for c, p in classes))


# ---------------------------------------------------------------- --evaluate

def is_confusion_csv(path) -> bool:
    """Whether the file begins with the header this program writes (a confusion matrix
    written before, which --confusion may replace)."""
    try:
        with open(path, "rb") as f:
            return f.readline(len(CONFUSION_HEADER) + 3).rstrip(b"\r\n") == \
                CONFUSION_HEADER.encode()
    except OSError:  # unreadable: not recognised, so not replaced
        return False


def evaluation_record(trained: api.TrainedRun, result: api.Evaluation, confusion) -> dict:
    """--evaluate's results as plain JSON values (a class without test images: accuracy null)."""
    per_class = []
    for row in confusion_rows(result.confusion):
        images = sum(row[c] for c in CLASSES)
        per_class.append({"class": row["class"], "images": images, "correct": row[row["class"]],
                          "accuracy": row[row["class"]] / images if images else None})
    scores = {name: {**score, "correct": round(score["accuracy"] * result.images)}
              for name, score in result.scores.items()}
    return {"run": shown(trained.run_dir), "task": trained.config.task,
            "name": trained.config.run,
            "data": shown(result.data), "own_data": result.own_data, "images": result.images,
            "subset": trained.config.subset, "precision": result.precision,
            "device": result.device, **scores,
            **({"tta_level": trained.config.recipe.tta_level} if "test_tta" in scores else {}),
            "recorded": result.recorded, "per_class": per_class,
            "confusion_file": None if confusion is None else shown(confusion)}


def print_evaluation(record: dict):
    own = {True: "the run's own data", False: "other data than the run's (another digest)",
           None: "the run recorded no digest to compare"}[record["own_data"]]
    print(f"{shown(record['run'], one_line=True)} ({record['task']} {record['name']}): "
          f"{record['precision']} on {record['device']}")
    print(f"data: {shown(record['data'], one_line=True)}, {record['images']} test images"
          f"{'' if record['subset'] is None else ' (subset ' + str(record['subset']) + ')'}; "
          f"{own}")
    tta = f"test with TTA (level {record.get('tta_level')})"
    for name, label in (("test", "test"), ("test_tta", tta)):
        if name not in record:
            continue
        score, recorded = record[name], record["recorded"].get(name)
        same = recorded == {"loss": score["loss"], "accuracy": score["accuracy"]}
        print(f"{label}: accuracy {100 * score['accuracy']:.2f} % ({score['correct']} of "
              f"{record['images']}), loss {score['loss']:.4f}; metrics.json: "
              + ("the same" if same else "none" if recorded is None else
                 f"{100 * recorded['accuracy']:.2f} %, loss {recorded['loss']:.4f}"))
    print("per class" + (f" ({tta})" if "test_tta" in record else "") + ":")
    for row in record["per_class"]:
        accuracy = "no images" if row["accuracy"] is None else f"{100 * row['accuracy']:6.2f} %"
        print(f"  {row['class']:<10} {accuracy} ({row['correct']} of {row['images']})")
    if record["confusion_file"]:
        print(f"confusion matrix: {shown(record['confusion_file'], one_line=True)}")


def evaluate(args):
    confusion = None
    if args.confusion:  # checked before the scoring, which takes a while
        confusion = output_file(args.confusion, "confusion", "a confusion matrix (CSV)",
                                is_confusion_csv)
    trained = api.load(args.run)
    try:
        result = api.score(trained, args.data_dir, progress=sys.stderr.isatty())
    except UserError as err:
        if args.data_dir is None and err.setting == "data_dir":  # config.json's, not typed
            raise UserError(f"the run's data {err.value}: {err.message}; give the CIFAR-10 "
                            "folder with --data-dir") from None
        raise
    if confusion is not None:
        save_csv(confusion_rows(result.confusion), confusion)
    record = evaluation_record(trained, result, confusion)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print_evaluation(record)


# ---------------------------------------------------------------- main

@cli.exits_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.top_k > len(CLASSES):
        raise UserError(f"must be at most {len(CLASSES)}, the number of classes",
                        setting="top_k", value=args.top_k)
    modes = [bool(args.images), bool(args.export), args.evaluate]
    if sum(modes) != 1:
        raise UserError("give images to classify, --export FILE.onnx or --evaluate"
                        + (", only one of them" if any(modes) else ""))
    for option in ("data_dir", "confusion"):
        if getattr(args, option) is not None and not args.evaluate:
            raise UserError(f"{cli.option_name(option)} goes with --evaluate")
    if args.evaluate:
        evaluate(args)
        return
    trained = api.load(args.run)
    if args.export:
        path = api.export_onnx(trained, args.export)
        size = trained.preprocess.image_size
        print(f"wrote {shown(path, one_line=True)}: input \"images\" (N, 3, {size}, {size}) "
              f"preprocessed as the run's images, output \"logits\" (N, {len(CLASSES)})")
        return
    ranked = classify(trained, args.images, args.top_k)
    print_predictions(trained, args.images, ranked, args.json)


if __name__ == "__main__":
    main()

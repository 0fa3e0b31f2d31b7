"""Classify images with a trained run, or export its network to ONNX.

  python predict.py --run outputs/task2/cnn1g cat.png ship.jpg
  python predict.py --run outputs/task3/model1 --top-k 5 --json photos/*.jpg
  python predict.py --run outputs/task3/model1 --export model1.onnx

The network is rebuilt from the run's config.json with its best check's weights (best.pt).
Each image gets the run's own preprocessing: its pixels scaled to [0, 1], the whole image
resized to the run's image size (32x32, or the size a ResNet18 run trained at) by bilinear
interpolation, antialiased when it shrinks (our choice; the aspect ratio is not kept and
nothing is cropped), then normalised with the run's mean and std. A 32x32 image takes exactly
the steps the run's test images took. The ONNX file takes that preprocessed batch (any batch
size) and gives the logits; its metadata holds the image size, mean, std and class names.
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
import json

from common import api, run
from common.data import CLASSES
from common.errors import UserError

TOP_K = 3
BATCH = 64  # images classified at once: a few hundred MB at 224 pixels


def get_args_parser():
    p = run.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", type=run.path_text,
                   help="image files (PNG, JPEG, ...: what Pillow reads), any size")
    p.add_argument("--run", required=True, metavar="RUN_DIR", type=run.path_text,
                   help="a finished run's folder, e.g. outputs/task2/cnn1g (config.json, "
                        "best.pt and metrics.json)")
    p.add_argument("--top-k", type=run.whole_number(1), default=TOP_K, metavar="K",
                   help=f"how many classes to print per image, most likely first (default: "
                        f"{TOP_K}; at most {len(CLASSES)})")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (for programs) instead of one line per image")
    p.add_argument("--export", metavar="FILE.onnx", type=run.path_text, default=None,
                   help="write the run's network as ONNX (torch's dynamo exporter, checked "
                        "with onnx.checker) instead of classifying images")
    return p


def top_classes(probabilities, k: int) -> list[list[tuple[str, float]]]:
    """Per image, its k likeliest classes with their probabilities, likeliest first."""
    values, indices = probabilities.topk(k, dim=1)
    return [[(CLASSES[i], float(v)) for v, i in zip(vs, idx)]
            for vs, idx in zip(values.tolist(), indices.tolist())]


def classify(trained: api.TrainedRun, paths: list[str], k: int) -> list[list]:
    """Every image read first (a bad one stops before anything is printed), then classified
    in batches."""
    images = [api.read_image(path) for path in paths]
    out = []
    for start in range(0, len(images), BATCH):
        out += top_classes(trained.predict(images[start:start + BATCH]), k)
    return out


def print_predictions(trained: api.TrainedRun, paths: list[str], ranked: list, as_json: bool):
    if as_json:
        print(json.dumps({
            "run": str(trained.run_dir), "task": trained.config.task,
            "image_size": trained.preprocess.image_size,
            "predictions": [{"image": path, "top_k": [{"class": c, "probability": p}
                                                      for c, p in classes]}
                            for path, classes in zip(paths, ranked)]}, indent=2))
        return
    for path, classes in zip(paths, ranked):
        print(f"{path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in classes))


@run.exits_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.top_k > len(CLASSES):
        raise UserError(f"must be at most {len(CLASSES)}, the number of classes",
                        setting="top_k", value=args.top_k)
    if bool(args.export) == bool(args.images):
        raise UserError("give either images to classify or --export FILE.onnx"
                        + (", not both" if args.images else ""))
    trained = api.load(args.run)
    if args.export:
        path = api.export_onnx(trained, args.export)
        size = trained.preprocess.image_size
        print(f"wrote {path}: input \"images\" (N, 3, {size}, {size}) preprocessed as the run's "
              f"images, output \"logits\" (N, {len(CLASSES)})")
        return
    ranked = classify(trained, args.images, args.top_k)
    print_predictions(trained, args.images, ranked, args.json)


if __name__ == "__main__":
    main()

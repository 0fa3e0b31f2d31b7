"""Report tasks 4.b and 4.c: what ResNet18's first and last convolutional stages respond to in
one photograph (Figures 7 and 8).

  python task4bc.py                          # matplotlib's sample photograph (Grace Hopper)
  python task4bc.py --image zebra.jpg        # the report used a zebra
  python task4bc.py --indices 0 1 2 3        # other first-layer filters
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

import argparse
from pathlib import Path

from common import cli

IMAGE_SIZE = 224                       # ResNet18's ImageNet input size: layer4 gives 512 x 7 x 7
FIRST_LAYER_FILTERS = 64              # ResNet18's conv1: 64 filters of 7 x 7 x 3
FILTER_INDICES = [14, 26, 32, 49, 52]  # report 4.b, Figure 7: these first-layer filters
LAYER4_CHANNELS = 10                   # report 4.c, Figure 8: the first 10 channels of layer4
OVERLAY_ALPHA = 0.5                    # report 4.c: activations half-transparent over the image
SEED = 0                               # --weights none: the same random filters every run


def get_args_parser():
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", metavar="PATH", default=None, type=cli.path_text,
                   help="the photograph to look at (default: matplotlib's sample photograph, "
                        "grace_hopper.jpg)")
    p.add_argument("--indices", type=int, nargs="+", default=FILTER_INDICES, metavar="I",
                   help="first-layer filters to show, each 0-63 (default: the report's "
                        f"{' '.join(map(str, FILTER_INDICES))})")
    cli.add_weights_option(p)
    p.add_argument("--output-dir", metavar="DIR", default=None, type=cli.path_text,
                   help="where the two figures go (default: plots/; with --weights none: "
                        "outputs/task4bc/, so random-weight figures never replace the report's)")
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from matplotlib import cbook  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

from common import models  # noqa: E402
from common.data import IMAGENET_NORMALIZATION, read_image  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.files import ensure_writable_dir, save_figure  # noqa: E402
from common.system import seed_everything  # noqa: E402


def default_image() -> Path:
    """A photograph every installation has: the one matplotlib ships as sample data."""
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_image(path) -> torch.Tensor:
    """(3, IMAGE_SIZE, IMAGE_SIZE) in [0, 1], decoded by its mode as the data's images are:
    shorter side resized, then the centre cropped, ImageNet's evaluation preprocessing that
    keeps the photograph's proportions."""
    pixels = read_image(path, size=None, setting="image")
    return TF.center_crop(TF.resize(pixels, IMAGE_SIZE, antialias=True), IMAGE_SIZE).float() / 255


@torch.inference_mode()
def activations(model, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first convolution's output (before its BatchNorm) and layer4's (after its last
    BatchNorm, residual sum and ReLU), for one image."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in IMAGENET_NORMALIZATION)
    extractor = create_feature_extractor(model.eval(), {"conv1": "conv1", "layer4": "layer4"})
    return {k: v[0] for k, v in extractor(((image - mean) / std)[None]).items()}


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def figure7(model, conv1_out, image_name, indices, title, path):
    """Filters as RGB images (top row), their activation maps in grey (bottom row)."""
    fig, axes = plt.subplots(2, len(indices), figsize=(2.2 * len(indices), 5), squeeze=False)
    for col, i in enumerate(indices):
        w = model.conv1.weight[i].detach()
        w = (w - w.min()) / (w.max() - w.min()).clamp_min(1e-12)  # each filter spans 0..1
        axes[0, col].imshow(w.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[0, col].set_title(f"{i}")
        axes[1, col].imshow(conv1_out[i].numpy(), cmap="gray")
    for ax in axes.flat:
        _bare(ax)
    axes[0, 0].set_ylabel("filter (7x7 RGB)")
    axes[1, 0].set_ylabel(f"activation ({image_name})")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def figure8(image, layer4_out, title, path):
    """Channel activations alone (top row) and upsampled over the image (bottom row)."""
    channels = min(LAYER4_CHANNELS, len(layer4_out))
    upsampled = F.interpolate(layer4_out[None, :channels], size=image.shape[-2:], mode="bilinear",
                              align_corners=False)[0]
    fig, axes = plt.subplots(2, channels, figsize=(2 * channels, 4.6), squeeze=False)
    for c in range(channels):
        axes[0, c].imshow(layer4_out[c].numpy(), cmap="viridis", interpolation="nearest")
        axes[0, c].set_title(f"{c}")
        axes[1, c].imshow(image.permute(1, 2, 0).numpy())
        axes[1, c].imshow(upsampled[c].numpy(), cmap="jet", alpha=OVERLAY_ALPHA)
    for ax in axes.flat:
        _bare(ax)
    h, w = layer4_out.shape[-2:]
    axes[0, 0].set_ylabel(f"activation ({h}x{w})")
    axes[1, 0].set_ylabel("over the image")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


@cli.exits_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    bad = [i for i in args.indices if not 0 <= i < FIRST_LAYER_FILTERS]
    if bad:
        raise UserError(f"the first layer has filters 0-{FIRST_LAYER_FILTERS - 1} only",
                        setting="indices", value=" ".join(map(str, bad)))
    image_path = Path(args.image) if args.image else default_image()
    image = load_image(image_path)
    seed_everything(SEED)
    model = models.load_resnet18(args.weights)
    random = models.is_random(args.weights)
    out = ensure_writable_dir(args.output_dir or ("outputs/task4bc" if random else "plots"))
    acts = activations(model, image)
    label = models.describe_weights(args.weights)
    paths = [
        figure7(model, acts["conv1"], image_path.name, args.indices,
                f"Figure 7: ResNet18 with {label}, first convolutional layer: filters (top) and "
                f"their activations (bottom)", out / "task4b_figure7_filters.png"),
        figure8(image, acts["layer4"],
                f"Figure 8: ResNet18 with {label}, last convolutional stage (layer4): the first "
                f"{LAYER4_CHANNELS} channels for {image_path.name}",
                out / "task4c_figure8_layer4.png"),
    ]
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

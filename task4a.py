"""Report task 4.a: transfer learning, ImageNet ResNet18 with layer4 and a new fc trained on
CIFAR-10 (Figure 6, final table).

  python task4a.py                                   # the report's recipe, ImageNet weights
  python task4a.py --weights resnet18-f37072fd.pth   # the same weights from a local file
  python task4a.py --quick --image-size 112          # a first try on CPU
  python task4a.py --weights none                    # the same recipe without transfer
"""
from __future__ import annotations

import dataclasses

from common import cli, experiment, plotting, resnet, tables
from common.errors import UserError, exits_cleanly
from common.models import count_parameters
from common.recipes import RESNET18_TRANSFER

RUN_NAMES = {"imagenet": "resnet18_imagenet", "none": "resnet18_random_init"}


def get_args_parser():
    p = cli.make_parser(__doc__)
    resnet.add_weights_option(p)
    p.add_argument("--image-size", type=int, default=RESNET18_TRANSFER.image_size, metavar="N",
                   help="images are resized to N x N on the fly; smaller trades accuracy for "
                        "time, e.g. 112 is about 4x faster (default: "
                        f"{RESNET18_TRANSFER.image_size}, the report's)")
    return p


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    if args.image_size < 32:
        raise UserError(f"--image-size must be at least 32 (CIFAR-10's own size), "
                        f"got {args.image_size}")
    label = resnet.describe_weights(args.weights)
    name = RUN_NAMES.get(args.weights, "resnet18_weights_file")
    settings = cli.run_settings(args, "task4a", argv)
    # the weights before the data: a missing or broken weights file is reported at once
    weights = resnet.load_weights(args.weights, settings.progress)

    def make_model():
        return resnet.prepare_for_transfer(resnet.resnet18_with(weights))

    model = make_model()
    trainable = count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    session = experiment.setup(settings, runs=[name])
    if resnet.is_random(args.weights) and not args.output_dir:
        session.figure_dir = session.output_root  # figures from random weights stay out of plots/
    if session.is_main:
        print(f"ResNet18 with {label}: {trainable:,} trainable parameters "
              f"({' + '.join(resnet.TRAINABLE)}), {frozen:,} frozen")
    recipe = dataclasses.replace(RESNET18_TRANSFER, image_size=args.image_size)
    result = experiment.train_recipe(
        session, name, make_model, recipe,
        notes={"weights": label, "trainable": "+".join(resnet.TRAINABLE),
               "trainable_parameters": trainable, "frozen_parameters": frozen})
    if not session.is_main:
        return
    experiment.save_results(session, {name: result})
    acc = 100 * result["final"]["test"]["accuracy"]
    path = plotting.plot_run(result["history"], session.figure_dir / f"task4a_figure6_{name}.png",
                             f"Figure 6: ResNet18 with {label}, layer4 + fc trained, "
                             f"{args.image_size} px, final test accuracy {acc:.2f}%")
    print(tables.final_table(result, f"\nTable 4.a, ResNet18 with {label} "
                                     f"({result['epochs_completed']:.1f} epochs, {args.image_size} "
                                     f"px, {session.splits.source}, {result['device']}, "
                                     f"{result['precision']})"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

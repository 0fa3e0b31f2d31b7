"""Report task 4.a: transfer learning, ImageNet ResNet18 with layer4 and a new fc trained on
CIFAR-10 (Figure 6, final table).

  python task4a.py                                   # the report's recipe, ImageNet weights
  python task4a.py --weights resnet18-f37072fd.pth   # the same weights from a local file
  python task4a.py --quick --image-size 112          # a first try on CPU
  python task4a.py --weights none                    # the same recipe without transfer
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import cli
from common.recipes import PLANS, RESNET18_TRANSFER

RUNS = PLANS["task4a"]  # report 4.a: ImageNet's weights; and the same recipe without transfer
RUN_NAMES = {kwargs["weights"]: name for name, (_, _, kwargs) in RUNS.items()}


def get_args_parser():
    p = cli.make_parser(__doc__)
    cli.add_weights_option(p)
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="images are resized to N x N on the fly; smaller trades accuracy for "
                        "time, e.g. 112 is about 4x faster (default: "
                        f"{RESNET18_TRANSFER.image_size}, the report's)")
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common import models, results, run  # noqa: E402


@cli.exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    label = models.describe_weights(args.weights)
    name = RUN_NAMES.get(args.weights, "resnet18_weights_file")
    # the weights before the data: a missing or broken weights file is reported at once
    model = models.resnet18_for_transfer(args.weights)
    trainable = models.count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    # figures from random weights stay out of plots/
    model_name, recipe, _ = RUNS["resnet18_imagenet"]  # a weights file: the same recipe
    session = run.setup("task4a", [(name, model_name, recipe, {"weights": args.weights})],
                        **cli.script_options(args, argv, {"image_size": args.image_size}),
                        figures_to_plots=not models.is_random(args.weights))
    if session.is_main:
        print(f"ResNet18 with {label}: {trainable:,} trainable parameters "
              f"({' + '.join(models.TRAINABLE)}), {frozen:,} frozen")
    result = run.train_run(session, name, weights=label, trainable="+".join(models.TRAINABLE),
                       trainable_parameters=trainable, frozen_parameters=frozen)
    image_size = session.configs[name].recipe.image_size
    if not session.is_main:
        return
    run.save_results(session, {name: result})
    path = results.figure6(result, name, label, image_size).draw(session.figure_dir)
    print(results.final_table(result, f"\nTable 4.a, ResNet18 with {label} "
                                      f"({result['epochs_completed']:.1f} epochs, "
                                      f"{image_size} px, {session.splits.source}, "
                                      f"{result['device']}, {result['precision']})"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

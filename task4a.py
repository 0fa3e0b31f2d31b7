"""Report task 4.a: transfer learning, ImageNet ResNet18 with layer4 and a new fc trained on
CIFAR-10 (Figure 6, final table).

  python task4a.py                                   # the report's recipe, ImageNet weights
  python task4a.py --weights resnet18-f37072fd.pth   # the same weights from a local file
  python task4a.py --quick --image-size 112          # a first try on CPU
  python task4a.py --weights none                    # the same recipe without transfer
"""
from __future__ import annotations


from common import cli, experiment, plotting, resnet, tables
from common.errors import UserError, exits_cleanly
from common.loader import IMAGENET_NORMALIZATION
from common.recipe import Recipe, train_recipe

# report 4.a: Adam, lr 5e-4, batch 32, no data augmentation; Figure 6 converged within a few
# epochs (at most 5 here, early stopping after 4 checks without a better validation loss)
RECIPE = Recipe(optimizer="adam", lr=5e-4, batch_size=32, epochs=5, early_stop_count=4)
# images resized to 224 (ResNet18's ImageNet size), ImageNet's mean and standard deviation
IMAGE_SIZE = 224
EVAL_BATCH_SIZE = 100    # at 224 pixels, 500 images per evaluation batch need about 5 GB
RUN_NAMES = {"imagenet": "resnet18_imagenet", "none": "resnet18_random_init"}


def get_args_parser():
    p = cli.make_parser(__doc__)
    resnet.add_weights_option(p)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE, metavar="N",
                   help=f"images are resized to N x N on the fly; smaller trades accuracy for "
                        f"time, e.g. 112 is about 4x faster (default: {IMAGE_SIZE}, the report's)")
    return p


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    if args.image_size < 32:
        raise UserError(f"--image-size must be at least 32 (CIFAR-10's own size), "
                        f"got {args.image_size}")
    label = resnet.describe_weights(args.weights)
    experiment.seed_everything(args.seed)  # the new fc (and --weights none) start the same each run
    # the weights before the data: a missing weights file is reported at once
    model = resnet.prepare_for_transfer(resnet.load_resnet18(args.weights, args.progress))
    ctx = experiment.setup(args, "task4a")
    if resnet.is_random(args.weights) and not args.output_dir:
        ctx.figure_dir = ctx.output_root  # figures from random weights stay out of plots/
    trainable, frozen = resnet.parameter_counts(model)
    if ctx.is_main:
        print(f"ResNet18 with {label}: {trainable:,} trainable parameters "
              f"({' + '.join(resnet.TRAINABLE)}), {frozen:,} frozen")
    resize = args.image_size if args.image_size != 32 else None  # 32: CIFAR-10's own size
    name = RUN_NAMES.get(args.weights, "resnet18_weights_file")
    result = train_recipe(
        ctx, name, lambda: model, RECIPE,  # built (and seeded) above, before the data
        notes={"weights": label, "image_size": args.image_size,
               "trainable": "+".join(resnet.TRAINABLE), "trainable_parameters": trainable,
               "frozen_parameters": frozen},
        resize=resize, normalization=IMAGENET_NORMALIZATION, eval_batch_size=EVAL_BATCH_SIZE)
    if not ctx.is_main:
        return
    experiment.save_results(ctx, {name: result})
    print(tables.final_table(result, f"\nTable 4.a, ResNet18 with {label} "
                                     f"({result['epochs_completed']:.1f} epochs, {args.image_size} "
                                     f"px, {ctx.splits.source}, {result['device']}, "
                                     f"{result['precision']})"))
    acc = 100 * result["final"]["test"]["accuracy"]
    path = plotting.plot_run(result["history"], ctx.figure_dir / f"task4a_figure6_{name}.png",
                             f"Figure 6: ResNet18 with {label}, layer4 + fc trained, "
                             f"{args.image_size} px, final test accuracy {acc:.2f}%")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

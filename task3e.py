"""Report task 3e: trying to improve Model 1 further: LeakyReLU, SiLU, Gaussian-noise
augmentation and learning-rate scheduling, each against Model 1 (Figure 5 and a table).

  python task3e.py
  python task3e.py --variants silu,cosine --quick
"""
from __future__ import annotations

from common import cli, experiment, study
from common.augment import AugmentConfig
from common.errors import exits_cleanly
from task3 import MODEL1

NOISE_STD = 0.03  # report 3.e names Gaussian noise without a level: 3 % of the pixel range
V = study.Variant
VARIANTS = {v.name: v for v in [
    V("baseline", "Model 1 as in report 3.a (ReLU)"),
    V("leaky_relu", "LeakyReLU (slope 0.01) instead of ReLU", {"activation": "leaky_relu"}),
    V("silu", "SiLU instead of ReLU", {"activation": "silu"}),
    V("gaussian_noise", f"plus Gaussian-noise augmentation (std {NOISE_STD})",
      recipe_changes={"augment": AugmentConfig(hflip=True, rotate_degrees=3,
                                               noise_std=NOISE_STD)}),
    # a schedule needs a fixed length: cosine decay over the whole run, no early stop
    V("cosine", "cosine learning-rate decay over 10 epochs (no early stopping)",
      recipe_changes={"schedule": "cosine", "early_stop_count": None}),
]}


def get_args_parser():
    return study.make_parser(__doc__, VARIANTS)


@exits_cleanly
def main(argv=None):
    args = cli.parse_args(get_args_parser(), argv)
    variants = study.select(VARIANTS, args.variants)
    ctx = experiment.setup(args, "task3e")
    study.run_study(ctx, variants, MODEL1, baseline_dir=args.reuse_baseline,
                    figure_name="task3e_figure5_improvements.png",
                    figure_title="Figure 5: Model 1 and attempted improvements")


if __name__ == "__main__":
    main()

"""`python -m task1`: print the answers to report task 1 (1.a-1.g) with their working."""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common.cli import Parser, answer_help, exits_cleanly, path_text
from common.errors import OutputError, UserError


def get_args_parser() -> Parser:
    parser = Parser(
        prog="python -m task1",
        description="Compute and print the answers to report task 1 (theory, 1.a-1.g) with their "
                    "working: the convolution by hand, the translation experiment, the size "
                    "formulas and the parameter table of the 1.g network.")
    parser.add_argument("--markdown", metavar="PATH", type=path_text,
                        help="also write the answers as a markdown file at PATH, ready to paste "
                             "into a report")
    return parser


answer_help(__name__, get_args_parser)  # before torch loads: --help at once

from common.files import save_text  # noqa: E402
from task1.answers import as_markdown, as_text  # noqa: E402


@exits_cleanly
def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.markdown:
        try:
            save_text(as_markdown(), args.markdown)
        except OutputError as err:  # the path the user gave: bad input, not a failed run
            raise UserError(f"cannot write it: {err.reason}", setting="markdown",
                            value=args.markdown) from None
    print(as_text())
    if args.markdown:
        print(f"\nwrote {args.markdown}")


if __name__ == "__main__":
    main()

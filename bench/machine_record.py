"""The machine record every run of the package writes (common.system.machine_record), written on
its own beside a program the package does not run: the published airbench94_muon port is run
outside the repository, and `python -m bench.machine_record PATH` before it puts its record
beside its log (docs/speedrun.md), so that report.py can show both sides ran on one machine.

  python -m bench.machine_record results/task3e/published/epochs8.machine.json
"""
from __future__ import annotations

from common.errors import while_starting

while_starting(__name__)  # before the heavy imports: a Ctrl-C while torch loads is one line

from common import cli


def get_args_parser():
    p = cli.Parser(prog="python -m bench.machine_record", description=__doc__)
    p.add_argument("path", type=cli.path_text, help="the JSON file to write")
    return p


cli.answer_help(__name__, get_args_parser)  # before torch loads: --help at once

import torch  # noqa: E402

from common.files import save_json  # noqa: E402
from common.system import machine_record  # noqa: E402


@cli.exits_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    print(f"wrote {save_json(machine_record(torch.device('cpu')), args.path)}")


if __name__ == "__main__":
    main()

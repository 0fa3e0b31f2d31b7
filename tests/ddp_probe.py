"""Run by tests/test_robustness.py under torchrun: task3.py as `python task3.py` runs it, with probes.

  torchrun --standalone --nproc_per_node=2 tests/ddp_probe.py PROBE_DIR TASK3_ARGS...

Each rank records, into PROBE_DIR/rank<R>.json (written here, not by the library): a digest of
every training image it was given per epoch, every file the library wrote, and what fit()
returned. The library's own files go to task3's --output-dir as usual.
"""
import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import common.files  # noqa: E402
from common.data import TensorLoader  # noqa: E402
from common.trainer import Trainer  # noqa: E402

probe_dir = Path(sys.argv[1])
task_args = sys.argv[2:]
rank = int(os.environ["RANK"])
record = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "seen": {}, "writes": [],
          "fit": None}

original_order = TensorLoader.order


def order(self):
    """Training epochs only (train_eval, val and test loaders have train=False)."""
    given = original_order(self)
    if self.train:
        seen = record["seen"].setdefault(str(self.epoch), [])
        seen += [hashlib.sha1(img.cpu().numpy().tobytes()).hexdigest()
                 for img in self.images[given]]
    return given


original_atomic = common.files._atomic


def atomic(path, write, *rest):
    record["writes"].append(str(Path(path).resolve()))
    return original_atomic(path, write, *rest)


original_fit = Trainer.fit


def fit(self):
    result = original_fit(self)
    record["fit"] = {"result": result,
                     "checks": [{k: v for k, v in c.items() if k != "wall_time_s"}
                                for c in self.history["checks"]],
                     "step_loss": self.history["step_loss"],
                     "weights": {k: v.double().sum().item() for k, v in
                                 self.raw_model.state_dict().items()}}
    return result


TensorLoader.order = order
common.files._atomic = atomic
Trainer.fit = fit

sys.argv = [str(ROOT / "task3.py")] + task_args
try:
    runpy.run_path(str(ROOT / "task3.py"), run_name="__main__")
finally:
    probe_dir.mkdir(parents=True, exist_ok=True)
    with open(probe_dir / f"rank{rank}.json", "w") as f:
        json.dump(record, f, default=str)

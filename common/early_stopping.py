"""Early stopping as a unit with its own state (Lightning's EarlyStopping is the model): the
loop reports each validation loss and asks whether to stop; the checkpoint stores the state."""
from __future__ import annotations

import math


class EarlyStopping:
    def __init__(self, patience: int | None):
        self.patience = patience          # checks without a lower validation loss; None: off
        self.best_score = math.inf        # the lowest validation loss so far
        self.best_check = -1              # its index in the run's checks
        self.wait_count = 0               # checks since then

    def update(self, val_loss: float, check: int) -> bool:
        """Record one check; True when it is the best so far."""
        if val_loss < self.best_score:
            self.best_score, self.best_check, self.wait_count = val_loss, check, 0
            return True
        self.wait_count += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.wait_count >= self.patience

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_check": self.best_check,
                "wait_count": self.wait_count, "patience": self.patience}

    def load_state_dict(self, state: dict):
        # the patience is not restored: a resumed run takes the one it is given (--patience)
        self.best_score, self.best_check = state["best_score"], state["best_check"]
        self.wait_count = state["wait_count"]

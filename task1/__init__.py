"""Report task 1 (theory), answered by computation: run `python -m task1`."""

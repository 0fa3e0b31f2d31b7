"""The library under the task scripts: data, models, Trainer, plotting, command line."""

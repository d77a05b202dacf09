"""pquant's Hydra sweeper on current Optuna (``hydra/sweeper=optuna``)."""

"""pquant's Hydra sweeper on current Optuna (``hydra/sweeper=pquant_optuna``)."""

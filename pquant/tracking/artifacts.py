"""Fetch files a previous run logged (e.g. a distillation teacher's ``config.yaml``/``model.pt``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def download_run_files(uri: str, run_id: str, names: Sequence[str], dst: str | Path) -> Path:
    """Download the artifacts ``names`` of MLflow run ``run_id`` (store ``uri``) into ``dst``.

    Returns:
        ``dst``, holding the files.

    Raises:
        FileNotFoundError: the run or one of the files is not in the store.
    """
    from mlflow.exceptions import MlflowException

    from pquant.tracking.store import open_client

    client = open_client(uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise FileNotFoundError(f"no MLflow run {run_id} in {uri}") from None
    for name in names:
        try:
            client.download_artifacts(run_id, name, str(dst))
        except (MlflowException, OSError):
            raise FileNotFoundError(f"MLflow run {run_id} in {uri} has no artifact {name!r} "
                                    f"(it must have been run with tracking.log_model=true)"
                                    ) from None
    return dst

"""Puts the project's own ``conf/`` (in the current working directory) on Hydra's search path,
ahead of pquant's packaged defaults -- only for pquant's config, never for other Hydra apps.

A file ``conf/model/mynet.yaml`` in the directory a command starts from is then selectable as
``model=mynet``, and ``conf/experiment/<name>.yaml`` as ``+experiment=<name>``, without touching
the installed package. (A ``conf/config.yaml`` there would replace pquant's primary config.)
"""

import importlib.util
import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "pquant-user-conf"


def _packaged_conf() -> Path | None:
    spec = importlib.util.find_spec("pquant")
    if spec is None or not spec.submodule_search_locations:
        return None
    return (Path(list(spec.submodule_search_locations)[0]) / "conf").resolve()


def _plain(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class PquantUserConfSearchPathPlugin(SearchPathPlugin):
    """Prepends ``<cwd>/conf`` right before pquant's own config directory."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        packaged = _packaged_conf()
        user = Path(os.getcwd()).resolve() / "conf"
        if packaged is None or not user.is_dir() or user == packaged:
            return
        for element in search_path.get_path():
            if element.provider == PROVIDER:
                return
            try:
                same = Path(_plain(element.path)).resolve() == packaged
            except (OSError, ValueError):
                same = False
            if same:
                search_path.prepend(PROVIDER, f"file://{user}",
                                    anchor=SearchPathQuery(element.provider, element.path))
                return

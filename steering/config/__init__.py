"""Typed configs: one dataclass per concept (``schema.py``, plain Python), with the checks of ``fields.py``.

Hydra reads them through the config source in ``hydra_plugins/steering_schemas`` (the primary
configs put ``steering-schema://steering.config`` on their search path and list the schema first
in their defaults), which adds the validating nodes of ``hydra.py``; each app turns its composed
config into these dataclasses once (``steering.cli``).
"""

from pathlib import Path

from steering.config import schema

_PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> str:
    """The apps' config folder: ``steering/conf`` in an installed package, else the checkout's ``conf/``.

    A built wheel carries a copy of the repository's ``conf/`` and ``experiments/`` as
    ``steering/conf`` (``setup.py``); a checkout or an editable install reads ``conf/`` in place.
    """
    packaged = _PACKAGE / "conf"
    return str(packaged if packaged.is_dir() else _PACKAGE.parent / "conf")


#: Schema name, as the YAML files' defaults lists use it -> dataclass.
SCHEMAS: dict[str, type] = {
    "run_schema": schema.RunConfig,
    "signals_schema": schema.SignalsAppConfig,
    "train_schema": schema.TrainAppConfig,
    "prepare_schema": schema.PrepareConfig,
    "report_schema": schema.ReportConfig,
    "source_folder_schema": schema.FolderSourceConf,
    "source_synthetic_schema": schema.SyntheticSourceConf,
}

__all__ = ["SCHEMAS", "config_dir", "schema"]

"""A Hydra config source that serves steering's structured-config schemas (``steering/config/schema.py``).

The apps' primary configs extend ``run_schema``, ``train_schema``, ... in their defaults; the search
path plugin below puts this source (``steering-schema://steering.config``) on every search path, so
a user's own ``hydra.searchpath=[...]`` does not lose it. The source serves each schema through
``steering.config.hydra.structured``, which gives the plain dataclasses their validating nodes.
A config source (rather than Hydra's
ConfigStore) keeps ``--help`` fast: Hydra deep-copies the whole ConfigStore for every config group it
lists, while this source holds nothing but its name and builds a schema only when one is loaded.
Hydra discovers both plugins in the ``hydra_plugins`` namespace package; importing them is cheap
(steering itself is imported only when a schema is looked up).
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

SCHEME = "steering-schema"


def _schemas() -> dict[str, type]:
    from steering.config import SCHEMAS

    return SCHEMAS


class SteeringSchemaSource(ConfigSource):
    """``steering-schema://steering.config``: every name in ``steering.config.SCHEMAS``, at the top level."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _name(self, config_path: str) -> str:
        return self._normalize_file_name(config_path.strip("/")).removesuffix(".yaml")

    def load_config(self, config_path: str) -> ConfigResult:
        from steering.config.hydra import structured

        name = self._name(config_path)
        schemas = _schemas()
        if name not in schemas:
            raise ConfigLoadError(f"{self.full_path()}: no schema named {name!r}; known: {sorted(schemas)}")
        return ConfigResult(
            config=structured(schemas[name]),
            path=self.full_path(),
            provider=self.provider,
            header={"package": None},
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") == ""

    def is_config(self, config_path: str) -> bool:
        return "/" not in config_path.strip("/") and self._name(config_path) in _schemas()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path.strip("/") != "" or results_filter == ObjectType.GROUP:
            return []
        return sorted(_schemas())


class SteeringSchemaSearchPath(SearchPathPlugin):
    """Appends the schema source to the config search path (it only adds the ``*_schema`` names)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="steering", path=f"{SCHEME}://steering.config")

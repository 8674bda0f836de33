"""Hydra overrides, read with Hydra's own parser: the one place that knows their grammar.

A sweep's plan is its command-line task overrides plus ``hydra.sweeper.params``; a job's run
records its own (single-valued) overrides in the tag ``sweep_overrides``. Everything the sweep
needs from them (the swept keys, the number of planned jobs, every strength asked for, a job's
values) is answered here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _parse_one(text: str) -> Override:
    # Parsing is ~1 ms; the same override text recurs in every run of a sweep (a pure memo).
    return OverridesParser.create().parse_override(text)


def parse(overrides: Iterable[str]) -> list[Override]:
    """Hydra's parse of each override (raises Hydra's error naming a malformed one)."""
    return [_parse_one(str(o)) for o in overrides]


def key_of(override: Override) -> str:
    """The config key an override sets, without Hydra's ``+``/``++``/``~`` prefixes."""
    return override.get_key_element().lstrip("+~")


def plan(task: Iterable[str], params: Mapping[str, Any] | None = None) -> list[Override]:
    """A sweep's plan: ``hydra.sweeper.params`` (as ``key=value``) then the task overrides, parsed."""
    return parse([*(f"{k}={v}" for k, v in (params or {}).items()), *task])


def task_and_params(config: DictConfig) -> tuple[list[str], dict[str, Any]]:
    """The task overrides and sweeper params of a composed multirun config (unresolved)."""
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or [])
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [str(o) for o in task], {str(k): v for k, v in params.items()}


def varied_keys(task: Iterable[str], params: Mapping[str, Any] | None = None) -> list[str]:
    """Keys swept by a multirun: the sweep overrides of the command line, then every sweeper param."""
    keys = [key_of(o) for o in parse(task) if o.is_sweep_override()]
    keys += [str(k).lstrip("+~") for k in params or {}]
    return list(dict.fromkeys(keys))


def planned_jobs(task: Iterable[str], params: Mapping[str, Any] | None = None) -> int | None:
    """Jobs of a grid sweep over discrete values (a key given twice counts once); None for ranges."""
    sizes: dict[str, int] = {}
    for override in plan(task, params):
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            sizes[override.get_key_element()] = len(list(override.sweep_string_iterator()))
        else:
            sizes[override.get_key_element()] = 1
    return math.prod(sizes.values()) if sizes else 1


def values_of(key: str, task: Iterable[str], params: Mapping[str, Any] | None = None) -> list[str]:
    """Every value the plan gives ``key`` (sweep values expanded), as written."""
    found: list[str] = []
    for override in plan(task, params):
        if key_of(override) != key:
            continue
        found += list(override.sweep_string_iterator()) if override.is_sweep_override() else [_value_text(override)]
    return found


def resolved_or_none(config: DictConfig, key: str) -> str | None:
    """``key`` of the sweep's config as text, or None when unset or when its interpolation cannot
    resolve in the sweep's process (e.g. ``${hydra:runtime.output_dir}``, known only in a job)."""
    try:
        value = OmegaConf.select(config, key, default=None)
    except Exception:
        return None
    return str(value) if value else None


def _value_text(override: Override) -> str:
    """The value as the user wrote it (quotes and spacing kept: it names the choice in the tables)."""
    return override.input_line.partition("=")[2] if override.input_line else str(override.value())


def override_values(overrides: Iterable[str]) -> dict[str, str]:
    """A job's overrides as values: ``["+approach=x", "strength=1"]`` -> ``{"approach": "x", "strength": "1"}``.

    Deletions without a value are left out; an override Hydra cannot parse (a hand-edited tag) is
    skipped with a warning.
    """
    values: dict[str, str] = {}
    for text in overrides:
        try:
            override = _parse_one(str(text))
        except HydraException as exc:
            log.warning("ignoring an override Hydra cannot parse: %s (%s)", text, exc)
            continue
        if "=" in str(text):
            values[key_of(override)] = _value_text(override)
    return values

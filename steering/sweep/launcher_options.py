"""The launcher's options, checked when a sweep starts: before the parent run, the server or any job.

Hydra's launchers pass their settings to joblib or submitit as they are, so a value that cannot
work (``hydra.launcher.n_jobs=0``) would end in their traceback after the sweep had started.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from steering.errors import ConfigError

#: Launcher options that count workers or tasks: at least one (joblib's n_jobs may also be negative,
#: -1 meaning every core; only 0 means nothing).
_COUNTS = {"n_jobs": "a number of workers other than 0 (-1: every core)", "tasks_per_node": "at least 1"}


def launcher_problem(options: dict[str, Any]) -> ConfigError | None:
    """The first launcher option (``hydra.launcher.<key>``) that cannot work, as an error, or None."""
    for key, wanted in _COUNTS.items():
        value = options.get(key)
        if value is None:
            continue
        bad = value == 0 if key == "n_jobs" else value < 1
        if isinstance(value, bool) or not isinstance(value, int) or bad:
            return ConfigError(f"hydra.launcher.{key}", f"{value!r} does not work; give {wanted}")
    return None


def check_launcher_options(config: DictConfig) -> None:
    """Raise the :class:`ConfigError` of the first launcher option that cannot work (see
    :func:`launcher_problem`); the sweep callback stops on it before anything starts."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    if launcher is None:
        return
    problem = launcher_problem(OmegaConf.to_container(launcher, resolve=True))  # type: ignore[arg-type]
    if problem is not None:
        raise problem

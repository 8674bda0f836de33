"""``python -m steering.run``: one steering configuration, logged as one MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from steering.config import config_dir
from steering.errors import one_line_errors

if TYPE_CHECKING:
    from steering.engine.reuse import SweepReuse

log = logging.getLogger("steering.run")

#: The one sweep-scoped reuse object of this process: (sweep identity, object). A new sweep, or a
#: standalone run, never sees another sweep's predictions.
_current_sweep: dict[str, tuple[tuple, SweepReuse]] = {}


def sweep_reuse(sweep_dir: str | Path | None) -> SweepReuse | None:
    """The reuse object of the sweep in ``sweep_dir`` (created on its first job), or None outside sweeps."""
    from steering.engine.reuse import SweepReuse

    if sweep_dir is None:
        _current_sweep.clear()
        return None
    plan = Path(sweep_dir) / "multirun.yaml"
    identity = (str(Path(sweep_dir).resolve()), plan.stat().st_mtime_ns if plan.is_file() else None)
    held = _current_sweep.get("sweep")
    if held is None or held[0] != identity:
        from steering.sweep.siblings import sweep_strengths

        held = (identity, SweepReuse(sweep_strengths(sweep_dir)))
        _current_sweep["sweep"] = held
    return held[1]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="run")
@one_line_errors
def main(cfg: DictConfig) -> float:
    from steering.tracking.job import evaluate, summary  # torch and MLflow load after composition

    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    run_cfg = OmegaConf.to_object(cfg)  # the typed run config (steering.config.schema.RunConfig)
    result = evaluate(run_cfg, sweep_dir=sweep_dir, reuse=sweep_reuse(sweep_dir))
    log.info("%s", summary(run_cfg, result, sweep_dir))  # terminal and the job's log file
    # The return value lets optimisation sweepers (e.g. Optuna) maximise the valence gain.
    return float(result.metrics["dr_valence"])


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    from steering.errors import run_app
    from steering.tracking.preflight import tracking_environment

    tracking_environment()  # before MLflow is imported: it decides on telemetry at import
    run_app(main)


if __name__ == "__main__":
    cli()

"""Select on val, confirm on test: the sweep's best configuration, run once more on the held-out split.

A sweep with confirmation evaluates its jobs on ``data.eval_split`` (``val`` in the ``strengths`` and
``methods`` presets). When it ends, the FINISHED row that maximises ``confirm.criterion`` under
the tie rule (rows within a tolerance of the best are tied and the simplest of them wins: smallest
strength, then earliest job; steering.sweep.ties) is run again, unchanged except
``data.eval_split = confirm.split`` (``test``), as a child of the sweep's parent run tagged
``sweep_role=confirmation`` (not a row of the comparison table). The parent gets ``confirmation.csv``:
the choice (its overrides), how many rows were tied with it, its figures and n on the selection
split and on the confirmation split (Δr, paired-bootstrap interval, the family p of :mod:`steering.stats.family`).

Config (``conf/run.yaml``)::

    confirm:
      enabled: false      # confirm=true is the shorthand for enabled with the defaults
      criterion: mean_dr  # mean_dr = (dr_valence + dr_arousal) / 2, or dr_valence, dr_arousal
      split: test

Hydra cannot select a config-group option called ``true`` from the command line (it parses ``true``
as a bool and refuses a bool group override), so ``confirm`` is a plain node and the bool shorthand
is normalised here.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from steering.config.schema import RunConfig
from steering.sweep import formats, ties
from steering.sweep.overrides import override_values
from steering.tracking.runs import PARENT_FILE
from steering.vocab import SPLITS, TARGETS

log = logging.getLogger(__name__)

CRITERIA = ("mean_dr", "dr_valence", "dr_arousal")
ROLE = "confirmation"
TAG_ROLE = "sweep_role"
TAG_CHOSEN = "confirmation_of"
OUT_DIR = "confirmation"
FIGURES = ("r_base", "r_steered", "dr", "dr_ci_low", "dr_ci_high", "dr_p")


class ConfirmConfigError(ValueError):
    """A ``confirm`` setting that cannot work (bad criterion or split, or a lost override)."""


@dataclass(frozen=True)
class ConfirmSettings:
    enabled: bool = False
    criterion: str = "mean_dr"
    split: str = "test"


def confirm_settings(config: DictConfig | Mapping[str, Any]) -> ConfirmSettings:
    """``confirm`` of a composed config: a bool (shorthand) or a mapping; validated."""
    node = OmegaConf.select(config, "confirm") if isinstance(config, DictConfig) else config.get("confirm")
    if node is None or isinstance(node, bool):
        settings = ConfirmSettings(enabled=bool(node))
        task = OmegaConf.select(config, "hydra.overrides.task") if isinstance(config, DictConfig) else None
        lost = [o for o in (task or []) if str(o).lstrip("+~").startswith("confirm.")]
        if isinstance(node, bool) and lost:
            flag = str(node).lower()
            raise ConfirmConfigError(f"confirm={flag} replaced {', '.join(lost)}; write confirm.enabled={flag} instead")
    else:
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        unknown = set(values) - {"enabled", "criterion", "split"}
        if unknown:
            raise ConfirmConfigError(f"confirm: unknown key(s) {sorted(unknown)}; known: enabled, criterion, split")
        settings = ConfirmSettings(
            enabled=bool(values.get("enabled", False)),
            criterion=str(values.get("criterion", "mean_dr")),
            split=str(values.get("split", "test")),
        )
    if settings.criterion not in CRITERIA:
        raise ConfirmConfigError(f"confirm.criterion must be one of {', '.join(CRITERIA)}, not {settings.criterion!r}")
    if settings.split not in SPLITS:
        raise ConfirmConfigError(f"confirm.split must be one of {', '.join(SPLITS)}, not {settings.split!r}")
    return settings


def criterion_values(table: pd.DataFrame, criterion: str) -> pd.Series:
    """The criterion per row (``mean_dr`` = mean of Δr valence and Δr arousal)."""
    if criterion == "mean_dr":
        return (pd.to_numeric(table["dr_valence"]) + pd.to_numeric(table["dr_arousal"])) / 2
    return pd.to_numeric(table[criterion])


@dataclass(frozen=True)
class Selection:
    """The chosen row, the best row and every row tied with the best (in the tie-break order)."""

    row: pd.Series
    best: pd.Series
    tied: pd.DataFrame
    tolerance: float

    @property
    def is_tie(self) -> bool:
        return len(self.tied) > 1


def select(table: pd.DataFrame, criterion: str) -> Selection | None:
    """The FINISHED row with the largest finite criterion under the tie rule (steering.sweep.ties): rows
    within the tolerance of the best are tied, and the simplest of them (smallest strength, then earliest
    job) is chosen. None when no row qualifies."""
    values = criterion_values(table, criterion)
    eligible = (table["status"] == "FINISHED") & values.notna() & values.map(lambda v: math.isfinite(float(v)))
    if not eligible.any():
        return None
    best = table.loc[values[eligible].idxmax()]
    targets = TARGETS if criterion == "mean_dr" else (criterion.removeprefix("dr_"),)
    tol = ties.tolerance(ties.row_se(best, targets))
    tied = ties.simplest_first(table[eligible & (values >= float(values[best.name]) - tol)])
    return Selection(tied.iloc[0], best, tied, tol)


def choose(table: pd.DataFrame, criterion: str) -> pd.Series | None:
    """The row :func:`select` chooses (the tie rule applied); None if there is none."""
    selection = select(table, criterion)
    return None if selection is None else selection.row


def describe_selection(selection: Selection, criterion: str) -> str:
    """One sentence: the rule, and which rows were tied with the best and which of them was chosen."""
    rule = (
        f"Selection: the finished row maximising `{criterion}`; {ties.RULE}, here ±{selection.tolerance:.2g}, "
        f"and a tie goes to {ties.ORDER}."
    )
    chosen = _row_name(selection.row)
    if not selection.is_tie:
        return f"{rule} No other row was tied with the best ({chosen})."
    tied = selection.tied
    if "strength" in tied and tied["strength"].notna().all():
        names = "strengths " + ", ".join(f"{float(v):g}" for v in tied["strength"])
    else:
        names = "jobs " + ", ".join(str(_job_or_none(v)) for v in tied.get("job", pd.Series(dtype=object)))
    return (
        f"{rule} {len(tied)} rows were tied with the best ({_row_name(selection.best)}): {names}; "
        f"chosen: {chosen}. Their differences are noise, not a better configuration."
    )


def _row_name(row: pd.Series) -> str:
    job = row.get("job")
    strength = row.get("strength")
    parts = [] if job is None or pd.isna(job) else [f"job {int(job)}"]
    if strength is not None and not pd.isna(strength):
        parts.append(f"strength {float(strength):g}")
    return ", ".join(parts) or str(row.get("run_name", row.get("run_id", "?")))


def _run_config(client: MlflowClient, run_id: str) -> DictConfig:
    """The resolved configuration the run logged (``config.yaml`` artifact)."""
    with tempfile.TemporaryDirectory() as tmp:
        return OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))


def confirmation_config(client: MlflowClient, run_id: str, split: str) -> RunConfig:
    """The chosen run's configuration, evaluated on ``split``, parsed into the typed run config."""
    cfg = _run_config(client, run_id)
    OmegaConf.update(cfg, "data.eval_split", split, merge=False)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), cfg))


@dataclass
class Confirmation:
    table: pd.DataFrame
    run_id: str
    path: Path


def run_confirmation(
    client: MlflowClient,
    parent: Mapping[str, Any],
    sweep_dir: str | Path,
    table: pd.DataFrame,
    settings: ConfirmSettings,
    chosen_run: Run,
) -> Confirmation:
    """Run ``chosen_run``'s configuration on ``settings.split`` nested under the parent; write confirmation.csv.

    ``parent`` is the sweep's ``mlflow_parent.json`` content; the run logs to ``parent['backend_uri']``
    (the sweep's local server, if any, is already stopped).
    """
    from steering.tracking.job import evaluate  # the sweep glue needs the runner only here

    out = Path(sweep_dir) / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    # A parent file without multirun.yaml: nested under the sweep, but no sibling strengths to batch.
    (out / PARENT_FILE).write_text(json.dumps({**parent, "tracking_uri": parent["backend_uri"]}, indent=2))
    cfg = confirmation_config(client, chosen_run.info.run_id, settings.split)
    chosen_overrides = json.loads(chosen_run.data.tags.get("sweep_overrides", "[]"))
    tags = {
        TAG_ROLE: ROLE,
        TAG_CHOSEN: chosen_run.info.run_id,
        "confirmation_criterion": settings.criterion,
        "confirmation_tied_jobs": json.dumps([_job_or_none(j) for j in _tied_jobs(table, settings.criterion)]),
        "sweep_job_num": ROLE,  # no job of the sweep: never a table row
        "sweep_overrides": json.dumps([*chosen_overrides, f"data.eval_split={settings.split}"]),
    }
    log.info("confirmation: %s on %s (%s)", " ".join(chosen_overrides), settings.split, settings.criterion)
    result = evaluate(cfg, sweep_dir=out, extra_tags=tags, results_dir=out)
    varied = parent.get("varied", [])
    confirm_table = confirmation_table(table, chosen_run, result.metrics, result.run_id, settings, varied)
    path = out.parent / "confirmation.csv"
    confirm_table.to_csv(path, index=False)
    return Confirmation(confirm_table, result.run_id, path)


def confirmation_table(
    table: pd.DataFrame,
    chosen_run: Run,
    test_metrics: Mapping[str, float],
    test_run_id: str,
    settings: ConfirmSettings,
    parent_varied: Sequence[str] | str = (),
) -> pd.DataFrame:
    """One row per target: the choice (values of the swept keys; ``overrides``: the job's whole command
    line), its figures on the selection split and on the confirmation split."""
    val = chosen_run.data.metrics
    row = table[table["run_id"] == chosen_run.info.run_id].iloc[0]
    selected_on = chosen_run.data.params.get("data.eval_split", "")
    selection = select(table, settings.criterion)

    def crit(metrics: Mapping[str, float]) -> float:
        if settings.criterion == "mean_dr":
            return (metrics.get("dr_valence", math.nan) + metrics.get("dr_arousal", math.nan)) / 2
        return metrics.get(settings.criterion, math.nan)

    varied = json.loads(parent_varied) if isinstance(parent_varied, str) else list(parent_varied)
    chosen_values = override_values(json.loads(chosen_run.data.tags.get("sweep_overrides", "[]")))
    choice = " ".join(f"{k}={chosen_values.get(k, row.get(k))}" for k in varied)
    rows = []
    for t in TARGETS:
        out: dict[str, object] = {
            "criterion": settings.criterion,
            "choice": choice,
            "job": row.get("job"),
            "selected_on": selected_on,
            "confirmed_on": settings.split,
            "criterion_selected": crit(val),
            "criterion_confirmed": crit(test_metrics),
            "tied_rows": len(selection.tied) if selection is not None else 1,
            "selected_n": val.get("n_eval", math.nan),
            "confirmed_n": test_metrics.get("n_eval", math.nan),
            "target": t,
        }
        for prefix, metrics in (("selected", val), ("confirmed", test_metrics)):
            for stat in FIGURES:
                name = f"{stat}_{t}" if stat.startswith("r_") else f"dr_{t}{stat[2:]}"
                out[f"{prefix}_{stat}"] = metrics.get(name, math.nan)
        out["overrides"] = " ".join(json.loads(chosen_run.data.tags.get("sweep_overrides", "[]")))
        out["selected_run_id"] = chosen_run.info.run_id
        out["confirmation_run_id"] = test_run_id
        rows.append(out)
    return pd.DataFrame(rows)


def is_confirmation(run: Run) -> bool:
    return run.data.tags.get(TAG_ROLE) == ROLE


def _tied_jobs(table: pd.DataFrame, criterion: str) -> list[object]:
    selection = select(table, criterion)
    return [] if selection is None else list(selection.tied.get("job", pd.Series(dtype=object)))


def _job_or_none(job: object) -> int | None:
    return None if job is None or pd.isna(job) else int(job)  # type: ignore[arg-type]


def selection_notes(children: Sequence[Run], table: pd.DataFrame) -> list[str]:
    """comparison.md lines on how a configuration may be (or was) chosen from this table, tie rule included."""
    confirmations = [r for r in children if is_confirmation(r)]
    splits = {r.data.params.get("data.eval_split") for r in children if not is_confirmation(r)} - {None}
    if confirmations:
        run = confirmations[-1]
        crit = run.data.tags.get("confirmation_criterion", "mean_dr")
        lines = [
            f"Rows were evaluated on `{'`, `'.join(sorted(splits))}`. The row chosen by `{crit}` was run once "
            f"on `{run.data.params.get('data.eval_split', '?')}` (run {run.info.run_id}, tag "
            f"sweep_role=confirmation): report confirmation.csv, not the best row of this table."
        ]
        selection = select(table, crit) if crit in CRITERIA else None
        if selection is not None:
            lines.append(describe_selection(selection, crit))
            if selection.row.get("run_id") != run.data.tags.get(TAG_CHOSEN):
                lines.append("This sweep's confirmation ran another row (chosen before this tie rule).")
        if run.data.params.get("data.eval_split") in splits:
            lines.append("The confirmation split is one the rows were chosen on: it confirms nothing.")
        return lines
    if "test" in splits and len(table) > 1:
        return [
            "Rows were evaluated on `test`: choosing a configuration from this table re-creates selection "
            "on the reported split. Select on `val` and confirm on `test` (confirm=true, data.eval_split=val; "
            "see docs/statistics.md)."
        ]
    return []


def confirmed_lines(confirmation: pd.DataFrame | None) -> list[str]:
    """The confirmed figures, one line per target, under a line saying what was chosen where (empty without)."""
    if confirmation is None or confirmation.empty:
        return []
    first = confirmation.iloc[0]
    n = first.get("confirmed_n")
    n_text = "" if n is None or pd.isna(n) else f", n = {int(n)} clips"
    tied = first.get("tied_rows")
    tie_text = (
        f"; {int(tied)} rows were tied on `{first['selected_on']}`, the tie rule chose it" if tied and tied > 1 else ""
    )
    job = first.get("job")
    job_text = "" if job is None or pd.isna(job) else f"job {int(job)}: "
    lines = [
        f"Confirmed on `{first['confirmed_on']}`{n_text} (the figures to report): {job_text}{first['choice'] or '-'}, "
        f"chosen on `{first['selected_on']}` by `{first['criterion']}`{tie_text}."
    ]
    for row in confirmation.itertuples():
        column = f"dr_{row.target}"
        low, high = (
            formats.format_cell(column, row.confirmed_dr_ci_low),
            formats.format_cell(column, row.confirmed_dr_ci_high),
        )
        lines.append(
            f"  Δr {row.target}: {formats.format_cell(column, row.confirmed_dr)} [{low}, {high}], "
            f"p = {formats.format_cell('p', row.confirmed_dr_p)}"
        )
    return lines


def rebuild_confirmation(
    children: Sequence[Run], table: pd.DataFrame, varied: Sequence[str] = ()
) -> pd.DataFrame | None:
    """confirmation.csv from a finished sweep's runs (``python -m steering.report``), or None without one."""
    confirmations = [r for r in children if is_confirmation(r) and r.info.status == "FINISHED"]
    if not confirmations:
        return None
    run = confirmations[-1]
    chosen = next((r for r in children if r.info.run_id == run.data.tags.get(TAG_CHOSEN)), None)
    if chosen is None:
        return None
    settings = ConfirmSettings(
        enabled=True,
        criterion=run.data.tags.get("confirmation_criterion", "mean_dr"),
        split=run.data.params.get("data.eval_split", "test"),
    )
    return confirmation_table(table, chosen, run.data.metrics, run.info.run_id, settings, varied)

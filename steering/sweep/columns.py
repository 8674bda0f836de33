"""The columns of a sweep's comparison table, declared once: bookkeeping, metrics, and the choices.

One row per job run: ``job`` and ``run_name``, the choices that tell the runs apart (the swept keys
and the :data:`CORE_CHOICES` that differ), the metrics read from each run, then bookkeeping. Choices
are an open set (any key a sweep varies), metrics a closed one, so every metric column is declared
here and a column is a choice exactly when it is not declared. A metric a run logs reaches the table
only through :data:`PER_TARGET_METRICS` or :data:`RUN_METRICS`, so it can never become a grouping
column of the contrasts, the steerability groups, the figures or a sweep comparison.

A new statistic in the table: one entry in :data:`PER_TARGET_METRICS` (``{t}`` is the target) or
:data:`RUN_METRICS`, named as the run logs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from steering.stats.family import FAMILY_P_COLUMN, WILLIAMS_P_COLUMN
from steering.stats.multiplicity import ADJUSTED_COLUMNS
from steering.vocab import TARGETS

#: Choices shown as columns whenever they differ between the rows (besides the swept keys); ``signals.method``
#: and ``signals.labels`` say what a named signal variant (conf/signal_variant/) is made of.
CORE_CHOICES = (
    "binning",
    "pathway",
    "layer",
    "method",
    "category",
    "category.target",
    "strength",
    "signals.method",
    "signals.labels",
)
#: Per-target metrics read from each run, in table order, once per target.
PER_TARGET_METRICS = ("r_base_{t}", "r_steered_{t}", "dr_{t}", "dr_{t}_ci_low", "dr_{t}_ci_high")
PER_TARGET_METRICS += (FAMILY_P_COLUMN, WILLIAMS_P_COLUMN)  # the family p, then Williams' p (secondary)
#: Metrics of the run as a whole, after the per-target ones (``n_eval``: the clips the row was scored on).
RUN_METRICS = ("coverage", "n_eval")
#: Logged by runs steered toward one category (docs/statistics.md, "Steering toward a chosen emotion"):
#: a column only when some row has it (:func:`without_absent`); the centroids draw the steering map.
TOWARD_TARGET_METRICS = tuple(
    f"toward_target_{name}{end}" for name in (*TARGETS, "share") for end in ("", "_ci_low", "_ci_high")
) + tuple(f"{point}_{t}" for point in ("target_centre", "base_centroid", "steered_centroid") for t in TARGETS)
RUN_METRICS += TOWARD_TARGET_METRICS
#: The intervention ledger's run-level scalars (steering.engine.ledger; over the steered connections): whether any
#: prediction moved, the steered blocks' gain, and how much the block output and the embedding changed.
LEDGER_METRICS = ("took_effect", "gain_mean", "gain_silenced_share", "gain_doubled_share", "block_change")
LEDGER_METRICS += ("embedding_change",)
RUN_METRICS += LEDGER_METRICS
#: Columns before the choices and after the metrics: neither choices nor metrics.
LEADING = ("job", "run_name")
#: ``eval_split``: the split the row was scored on (param ``data.eval_split``).
TRAILING = ("eval_split", "oracle", "status", "error", "run_id")


def metric_columns() -> list[str]:
    """The per-target metrics of each run, for every target in turn (``r_base_valence`` ... ``dr_arousal_p``)."""
    return [name.format(t=t) for t in TARGETS for name in PER_TARGET_METRICS]


def table_columns(choices: Iterable[str]) -> list[str]:
    """Every column of a comparison table with these ``choices``, in order (before the adjusted p-values)."""
    return [*LEADING, *choices, *metric_columns(), *RUN_METRICS, *TRAILING]


def declared_columns() -> frozenset[str]:
    """Every column that is not a choice: metrics (with the table's adjusted p-values) and bookkeeping."""
    return frozenset([*LEADING, *metric_columns(), *ADJUSTED_COLUMNS, *RUN_METRICS, *TRAILING])


def without_absent(table):
    """``table`` less the :data:`TOWARD_TARGET_METRICS` columns that no row has (a sweep not steered toward one)."""
    return table.drop(columns=[c for c in TOWARD_TARGET_METRICS if c in table and table[c].isna().all()])


def choice_columns(table) -> list[str]:
    """The table's choice columns: every column not declared a metric or bookkeeping, in table order."""
    declared = declared_columns()
    return [c for c in table.columns if c not in declared]


def varying_choices(table, exclude: Iterable[str] = ()) -> list[str]:
    """Choice columns (less ``exclude``) with more than one value in ``table`` (NaN counts as a value)."""
    excluded = set(exclude)
    return [c for c in choice_columns(table) if c not in excluded and table[c].nunique(dropna=False) > 1]

"""Statistics of a run and of a sweep: correlations, bootstrap, Williams/Zou, multiplicity."""

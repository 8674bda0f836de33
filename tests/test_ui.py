"""The MLflow UI over a steering store, rendered in headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from steering.sweep.server import start_server
from steering.tracking.runs import configure

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
RUNS = {"9bin-valence-conv4-lrm-s1.5-oracle": 0.0123, "9bin-valence-conv4-bypass-s2-oracle": -0.0456}
SCREENSHOTS = os.environ.get("STEERING_UI_SCREENSHOTS")  # a folder to keep screenshots in, for a human look


@pytest.fixture(scope="module")
def assets(sweep_assets):
    """This module's sweeps share one set of tiny inputs."""
    return sweep_assets


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """One `mlflow server` (the UI) on a free loopback port over a store with two steering runs."""
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp}/mlflow.db"
    experiment_id = configure(uri, "steering")
    run_ids = {}
    for name, dr in RUNS.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags={"oracle": "true"}) as run:
            mlflow.log_params({"strength": name.split("-s")[1].split("-")[0], "pathway.name": "valence"})
            mlflow.log_metrics({"dr_valence": dr, "dr_arousal": 0.002, "coverage": 1.0})
            run_ids[name] = run.info.run_id
    server = start_server(uri, tmp, workers=1)
    yield {"url": server.uri, "experiment_id": experiment_id, "run_ids": run_ids, "tmp": tmp}
    server.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            timeout=60_000,
        )
        yield browser
        browser.close()


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name))


def test_experiment_page_lists_the_runs(ui, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs?workflowType=machine_learning")
    for name in RUNS:
        page.get_by_text(name, exact=True).first.wait_for(state="attached")
    _shot(page, "runs.png")
    body = page.inner_text("body")
    assert "steering" in body and "matching runs" in body
    page.close()


def test_run_page_shows_the_delta_r_metrics(ui, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 1400})
    page.set_default_timeout(60_000)
    for name, dr in RUNS.items():
        page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{ui['run_ids'][name]}")
        page.get_by_text("dr_valence", exact=True).first.wait_for()
        _shot(page, f"run_{dr}.png")
        body = page.inner_text("body")
        assert name in body
        assert "dr_valence" in body and "dr_arousal" in body
        assert str(dr) in body  # the value itself, rendered
    page.close()


@pytest.fixture(scope="module")
def sweep_ui(assets, run_sweep):
    """A real 2-job sweep (method=lrm,bypass at one strength) and the UI over its store."""
    proc, sweep_dir, uri = run_sweep(assets, "ui-sweep", "method=lrm,bypass", "strength=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    server = start_server(uri, sweep_dir / "ui", workers=1)
    yield {"url": server.uri, **info}
    server.stop()


def test_sweep_runs_list_leads_with_the_varied_choice_and_shows_the_dataset(sweep_ui, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{sweep_ui['url']}/#/experiments/{sweep_ui['experiment_id']}/runs?workflowType=machine_learning")
    parent_name = f"sweep-multirun-{sweep_ui['sweep_id']}"
    page.get_by_text(parent_name).first.wait_for(state="attached")
    close = page.get_by_role("button", name="Close")
    if close.count():  # the assistant panel, which narrows the table
        close.first.click()
    # only the parent is listed, its children folded under it: its Dataset column names the feature file
    datasets = page.get_by_text("feats.h5")
    datasets.first.wait_for(state="attached")
    assert datasets.count() == 1
    page.locator(".ag-cell", has_text=parent_name).locator("button").first.click()
    page.get_by_text(re.compile(r"^lrm · 9bin-valence-conv4")).first.wait_for(state="attached")
    page.get_by_text(re.compile(r"^bypass · 9bin-valence-conv4")).first.wait_for(state="attached")
    datasets.nth(2).wait_for(state="attached")  # and each child's
    assert datasets.count() == 3
    _shot(page, "sweep_runs.png")
    page.close()


def test_sweep_parent_page_shows_description_params_and_summary(sweep_ui, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 2000})
    page.set_default_timeout(60_000)
    page.goto(f"{sweep_ui['url']}/#/experiments/{sweep_ui['experiment_id']}/runs/{sweep_ui['run_id']}")
    page.get_by_text("best_dr_valence", exact=True).first.wait_for()
    body = page.inner_text("body")
    assert f"Sweep {sweep_ui['sweep_id']}" in body  # the description (mlflow.note.content)
    assert "best Δr valence" in body
    for name in ("n_jobs", "n_failed", "best_dr_arousal", "binning.name", "layer.name"):
        assert name in body, name
    assert "method: lrm, bypass" in body  # what varied, as a tag (and not as a param)
    _shot(page, "sweep_parent.png")
    page.close()

"""Training: loss on every pass, best checkpoint chosen on val (never test), reference layout, MLflow curves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from steering import load_model
from steering.config.schema import ArchConf, TrainConf
from steering.data import split_indices
from steering.model import build_model
from steering.stats.metrics import pearson
from steering.training.loop import check_settings, train_model

TINY_ARCH = ArchConf(channels=[4, 8, 8, 16], embedding_size=16, head_hidden=12, mel_bins=64)
FAST = TrainConf(epochs=2, batch_size=8, lr=3e-3, progress=False)


@pytest.fixture
def feature_file(tmp_path):
    """40 random clips of 64 frames (the model's SpecAugment needs T >= 64 in training mode)."""
    from steering.data import write_feature_file

    rng = np.random.default_rng(0)
    feats = rng.normal(-40, 10, size=(40, 64, 64)).astype(np.float32)
    v, a = rng.uniform(-1, 1, (2, 40)).astype(np.float32)
    return write_feature_file(tmp_path / "features.h5", feats, v, a, [f"c{i}.wav" for i in range(40)])


def test_train_saves_loadable_reference_checkpoint(feature_file, tmp_path, monkeypatch):
    import steering.training.loop as training

    seen: list[np.ndarray] = []
    real_evaluate = training.evaluate

    def spy(model, ff, indices, *args, **kwargs):
        seen.append(np.asarray(indices))
        return real_evaluate(model, ff, indices, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", spy)
    logged: list[tuple[dict, int]] = []
    ckpt = tmp_path / "model.pth"
    result = train_model(feature_file, TINY_ARCH, FAST, ckpt, log_metrics=lambda m, s: logged.append((m, s)))

    val, test = split_indices(40, "val"), split_indices(40, "test")
    assert len(seen) == 2 and all(np.array_equal(s, val) for s in seen)  # val every epoch, never test
    assert not set(val) & set(test)
    assert [s for _, s in logged] == [1, 2] and {"train_loss", "val_r_valence", "val_r_arousal"} <= set(logged[0][0])
    raw = torch.load(ckpt, weights_only=True)
    assert {"model", "iteration", "best_val_pearson", "optimizer"} <= set(raw)
    assert raw["best_val_pearson"] == pytest.approx(result.best_val_pearson)
    assert raw["best_val_pearson"] == pytest.approx(max(m["val_r_mean"] for m, _ in logged))
    assert "visual_system.base.logmel_extractor.melW" in raw["model"]
    model = load_model(ckpt)
    assert model.config.channels == (4, 8, 8, 16)


def test_feedback_weights_are_trained(feature_file, tmp_path):
    """Loss on pass 2 reaches the ModBlocks: the defect of the earlier pipeline was that it did not."""
    torch.manual_seed(0)
    initial = build_model(TINY_ARCH).state_dict()
    ckpt = tmp_path / "model.pth"
    train_model(feature_file, TINY_ARCH, replace(FAST, epochs=1), ckpt)
    trained = load_model(ckpt).state_dict()
    lrm_keys = [k for k in trained if k.startswith("lrm.") and k.endswith("modulation.weight")]
    assert len(lrm_keys) == 4
    assert all(not torch.equal(initial[k], trained[k]) for k in lrm_keys)


def test_pass1_only_loss_leaves_feedback_untouched(feature_file, tmp_path):
    torch.manual_seed(0)
    initial = build_model(TINY_ARCH).state_dict()
    ckpt = tmp_path / "model.pth"
    train_model(feature_file, TINY_ARCH, replace(FAST, epochs=1, pass_weights=[1.0, 0.0], seed=0), ckpt)
    trained = load_model(ckpt).state_dict()
    key = "lrm.visual_system_base_conv_block4_modulation.from_affective_valence_128d_to_visual_system_base_conv_block4"
    assert torch.equal(initial[key + ".modulation.weight"], trained[key + ".modulation.weight"])


def test_config_errors(feature_file, tmp_path):
    with pytest.raises(ValueError, match="one weight per pass"):
        check_settings(TrainConf(forward_passes=3, pass_weights=[1, 1]))
    with pytest.raises(ValueError, match="one weight per pass"):
        train_model(feature_file, TINY_ARCH, replace(FAST, forward_passes=3), tmp_path / "m.pth")
    with pytest.raises(ValueError, match="epochs: Value '0' must be >= 1"):
        replace(FAST, epochs=0)
    with pytest.raises(TypeError, match="epoch"):
        TrainConf(epoch=3)


def test_pearson_of_a_constant_prediction_is_undefined():
    """Training reports r with the statistics' one pearson: nan (not 0) when the model predicts a constant."""
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 7])) == pytest.approx(0.9933, abs=1e-4)
    assert np.isnan(pearson(np.ones(3), np.array([1.0, 2, 3])))


def test_run_logs_to_mlflow(feature_file, tmp_path):
    import mlflow

    from steering.config.schema import DataConf, ModelConf, TrackingConf, TrainAppConfig
    from steering.tracking.training import train_logged

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrainAppConfig(
        model=ModelConf(name="tiny", arch=TINY_ARCH),
        data=DataConf(path=str(feature_file)),
        tracking=TrackingConf(uri=uri, experiment="t"),
        train=replace(FAST, epochs=1),
        checkpoint=str(tmp_path / "ckpt.pth"),
    )
    result = train_logged(config)
    assert result.checkpoint.is_file()
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("t-train")
    (run_info,) = client.search_runs([exp.experiment_id])
    assert "val_r_valence" in run_info.data.metrics and run_info.data.params["train.epochs"] == "1"
    assert len(client.get_metric_history(run_info.info.run_id, "train_loss")) == 1

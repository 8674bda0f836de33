"""Feature file reader and splits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from steering.data import FeatureFile, FeatureFileError, legacy_split, split_indices, threeway_split


@pytest.mark.parametrize("n", [10, 101, 1213])
def test_legacy_split_matches_seeded_shuffle(n):
    np.random.seed(42)
    expected = np.arange(n)
    np.random.shuffle(expected)
    train, val = legacy_split(n)
    assert np.array_equal(train, expected[: int(0.7 * n)])
    assert np.array_equal(val, expected[int(0.7 * n) :])
    if n == 1213:
        assert len(val) == 364


def test_threeway_split_keeps_legacy_train_and_partitions_the_rest():
    train, val, test = threeway_split(1213)
    legacy_train, legacy_val = legacy_split(1213)
    assert np.array_equal(train, legacy_train)
    assert sorted(np.concatenate([val, test])) == sorted(legacy_val)
    assert not set(val) & set(test)
    assert np.array_equal(split_indices(1213, "test"), test)
    with pytest.raises(ValueError, match="no test part"):
        split_indices(1213, "test", scheme="legacy")


def test_read_by_index_in_any_order(feature_file, make_feature_arrays):
    feats, valence, _, names = make_feature_arrays()
    with FeatureFile(feature_file) as ff:
        assert len(ff) == 40 and ff.frames == 32 and ff.mel_bins == 64
        batch = ff.read([7, 2, 30])
        assert batch.features.shape == (3, 32, 64)
        np.testing.assert_array_equal(batch.features.numpy(), feats[[7, 2, 30]])
        np.testing.assert_array_equal(batch.valence.numpy(), valence[[7, 2, 30]])
        assert batch.audio_name == [names[7], names[2], names[30]]
        sizes = [len(b.audio_name) for b in ff.batches(np.arange(10), 4)]
        assert sizes == [4, 4, 2]


def _write(path, arrays, **overrides):
    feats, valence, arousal, names = arrays
    data = {
        "feature": feats,
        "valence": valence,
        "arousal": arousal,
        "audio_name": np.array([n.encode() for n in names]),
    }
    data.update(overrides)
    with h5py.File(path, "w") as h5:
        for k, v in data.items():
            if v is not None:
                h5.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"arousal": None}, "missing key"),
        ({"feature": np.zeros((6, 64), dtype=np.float32)}, "rank 3"),
        ({"valence": np.array([0.1, np.nan, 0, 0, 0, 0], dtype=np.float32)}, "NaN"),
        ({"valence": np.zeros(5, dtype=np.float32)}, "shape"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, overrides, message, make_feature_arrays):
    path = _write(tmp_path / "bad.h5", make_feature_arrays(n=6), **overrides)
    with pytest.raises(FeatureFileError, match=message) as err:
        FeatureFile(path)
    assert str(path) in str(err.value)


def test_nan_features_are_reported_on_read(tmp_path, make_feature_arrays):
    feats, *_ = make_feature_arrays(n=6)
    feats[4, 0, 0] = np.nan
    path = _write(tmp_path / "nanfeat.h5", make_feature_arrays(n=6), feature=feats)
    with FeatureFile(path) as ff, pytest.raises(FeatureFileError, match=r"indices \[4\]"):
        ff.read([1, 4])


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FeatureFileError, match="not found"):
        FeatureFile(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(FeatureFileError, match="not a readable HDF5"):
        FeatureFile(junk)


def test_file_hash_follows_the_content(tmp_path):
    import os

    from steering.data import file_hash

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = file_hash(path)
    assert file_hash(path) == first
    path.write_bytes(b"abd")
    os.utime(path, ns=(1, 10**18))  # a new mtime, as any rewrite gives
    assert file_hash(path) != first

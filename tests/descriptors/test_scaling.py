"""Per-element feature statistics and n2p2 scaling schemes."""

import numpy as np
import pytest
import torch

from mlpot.descriptors.scaling import FeatureScaler, FeatureStatistics


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(200, 4, generator=g, dtype=torch.float64) * 3 + 1
    species = torch.randint(0, 2, (200,), generator=g)
    features[species == 1, 3] = 0.0  # element 1 has only 3 features (padding column)
    features[:, 2] = torch.where(species == 0, 2.5, features[:, 2])  # constant for element 0
    return features, species


def test_streaming_statistics_equal_full_pass():
    x, s = _data()
    stats = FeatureStatistics(2, [4, 3])
    for chunk in torch.split(torch.arange(200), 37):
        stats.update(x[chunk], s[chunk])
    for e in range(2):
        xe = x[s == e].numpy()
        np.testing.assert_allclose(stats.mean[e].numpy(), xe.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats.std[e].numpy(), xe.std(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(stats.min[e].numpy(), xe.min(0))
        np.testing.assert_array_equal(stats.max[e].numpy(), xe.max(0))
    assert stats.count.tolist() == [(s == 0).sum().item(), (s == 1).sum().item()]


@pytest.mark.parametrize("mode", ["none", "scale", "center", "scale_center", "scale_sigma", "standard"])
def test_scaling_modes_follow_their_formulas(mode):
    x, s = _data()
    s_min, s_max = -1.0, 2.0
    scaler = FeatureScaler.fit([(x, s)], [4, 3], mode=mode, s_min=s_min, s_max=s_max)
    y = scaler(x, s)
    e = 1  # element 1, feature 0: a non-constant feature
    xe, ye = x[s == e, 0], y[s == e, 0]
    lo, hi, mean, std = xe.min(), xe.max(), xe.mean(), xe.std(unbiased=False)
    if mode == "standard":
        s_min, s_max = 0.0, 1.0
    expected = {
        "none": xe,
        "scale": s_min + (s_max - s_min) * (xe - lo) / (hi - lo),
        "center": xe - mean,
        "scale_center": s_min + (s_max - s_min) * (xe - mean) / (hi - lo),
        "scale_sigma": s_min + (s_max - s_min) * (xe - mean) / std,
        "standard": (xe - mean) / std,
    }[mode]
    torch.testing.assert_close(ye, expected)
    assert torch.all(y[s == 1, 3] == 0), "padding columns stay zero"
    assert torch.isfinite(y).all()


def test_constant_feature_is_not_divided_by_zero():
    x, s = _data()
    scaler = FeatureScaler.fit([(x, s)], [4, 3], mode="scale")
    assert (0, 2) in scaler.constant_features
    y = scaler(x, s)
    assert torch.all(y[s == 0, 2] == 0.0)  # only shifted by its minimum


def test_extrapolation_flags_atoms_outside_training_range():
    x, s = _data()
    scaler = FeatureScaler.fit([(x, s)], [4, 3])
    assert not scaler.extrapolating(x, s).any()
    probe = x[:3].clone()
    probe[1, 0] = x[:, 0].max() + 1.0
    assert scaler.extrapolating(probe, s[:3]).tolist() == [False, True, False]


def test_bad_scaler_arguments():
    x, s = _data()
    with pytest.raises(ValueError, match="unknown scaling mode"):
        FeatureScaler.fit([(x, s)], [4, 3], mode="zscore")
    with pytest.raises(ValueError, match="s_max > s_min"):
        FeatureScaler.fit([(x, s)], [4, 3], s_min=1.0, s_max=0.0)
    with pytest.raises(ValueError, match="no atoms of element"):
        FeatureScaler.fit([(x[s == 0], s[s == 0])], [4, 3])


def test_scaler_state_round_trip():
    x, s = _data()
    scaler = FeatureScaler.fit([(x, s)], [4, 3], mode="scale_sigma", s_min=-1, s_max=1)
    empty = FeatureScaler(2, 4, mode="scale_sigma", s_min=-1, s_max=1)
    empty.load_state_dict(scaler.state_dict())
    torch.testing.assert_close(empty(x, s), scaler(x, s), rtol=0, atol=0)


def test_descriptor_fit_scaling_and_default_spec():
    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
    from structures_for_tests import water_box

    spec = SymmetryFunctionSpec.default(["H", "O"], cutoff=4.0)
    sf = SymmetryFunctions(spec).double()
    batches = [collate([water_box(seed=s)], labels=False) for s in range(3)]
    scaler = sf.fit_scaling(batches, mode="scale", s_min=-1.0, s_max=1.0)
    assert sf.scaler is scaler
    scaled = torch.cat([sf(b) for b in batches])
    raw = torch.cat([sf(b, scaled=False) for b in batches])
    assert not torch.equal(scaled, raw)
    # Over the fitting data every non-constant feature spans exactly [-1, 1].
    species = torch.cat([sf.species(b.numbers) for b in batches])
    for e in range(2):
        n = sf.n_features_per_element[e]
        cols = [c for c in range(n) if (e, c) not in scaler.constant_features]
        block = scaled[species == e][:, cols]
        torch.testing.assert_close(block.min(0).values, torch.full((len(cols),), -1.0, dtype=torch.float64))
        torch.testing.assert_close(block.max(0).values, torch.full((len(cols),), 1.0, dtype=torch.float64))
    assert "scaler.weight" in sf.state_dict()

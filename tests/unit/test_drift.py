"""Drift detectors: they fire on real shifts, stay quiet on stationary data, and never raise
because of their input."""

import math
import random

import numpy as np
import pytest

from streaming.drift import (
    DETECTOR_KINDS,
    RIVER_DETECTORS,
    EmbeddingKS,
    LabelPSI,
    RiverDetector,
    ks_pvalues,
)


def test_ks_pvalues_match_the_asymptotic_two_sample_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(150, 4))
    b[:, 1] += 0.5
    ours = ks_pvalues(a, b)
    theirs = [scipy_stats.ks_2samp(a[:, i], b[:, i], method="asymp").pvalue for i in range(4)]
    assert np.allclose(ours, theirs, rtol=0.05, atol=1e-4)


def test_embedding_ks_fires_on_a_shift_and_not_on_the_same_distribution():
    rng = np.random.default_rng(1)
    ks = EmbeddingKS(reference_size=200, window_size=100, step=10, alpha=1e-3)
    assert ks.update_many(rng.normal(size=(2000, 16))) == []
    shifted = rng.normal(size=(300, 16))
    shifted[:, 3] += 1.0
    detections = ks.update_many(shifted)
    assert detections and detections[0].kind == "input" and detections[0].score >= ks.threshold
    assert detections[0].at - 2000 <= 100
    assert detections[0].detail["dimensions_shifted"] >= 1


def test_embedding_ks_skips_bad_vectors_and_counts_them():
    ks = EmbeddingKS(reference_size=4, window_size=4, step=1)
    assert ks.update([1.0, 2.0]) is None
    for bad, reason in [
        ([math.nan, 1.0], "nan"),
        ([1.0, 2.0, 3.0], "wrong_dimension"),
        ([], "empty"),
        ("x", "not_a_vector"),
    ]:
        assert ks.update(bad) is None
        assert ks.skipped[reason] == 1
    assert ks.seen == 1


def test_psi_on_predicted_labels_single_class_and_missing_labels():
    psi = LabelPSI(reference_size=50, window_size=50, step=10, threshold=0.25)
    assert psi.update_many(["a"] * 500) == []  # a single class is a stable distribution
    assert psi.score == 0.0
    assert psi.update(None) is None and psi.skipped["no_label"] == 1
    d = psi.update_many(["b"] * 60)
    assert d and d[0].kind == "prediction" and d[0].score > 0.25


@pytest.mark.parametrize("name", sorted(RIVER_DETECTORS))
def test_river_detectors_fire_when_errors_jump(name):
    rng = random.Random(0)
    det = RiverDetector(name)
    det.update_many([rng.random() < 0.2 for _ in range(2000)])
    after = det.update_many([rng.random() < 0.8 for _ in range(1000)])
    assert after and after[0].at - 2000 <= 500
    assert DETECTOR_KINDS[name] == "concept"


def test_river_detector_skips_nan_and_rejects_unknown_names():
    det = RiverDetector("adwin")
    assert det.update(float("nan")) is None and det.update("x") is None
    assert det.skipped == {"nan": 1, "not_a_number": 1}
    with pytest.raises(ValueError, match="valid: adwin"):
        RiverDetector("nope")


def test_reset_forgets_the_reference():
    psi = LabelPSI(reference_size=10, window_size=10, step=1)
    psi.update_many(["a"] * 15)
    psi.reset()
    assert psi.reference == [] and len(psi.window) == 0
    assert psi.update_many(["b"] * 30) == []  # b is the new normal


def test_invalid_detector_settings_fail_early():
    with pytest.raises(ValueError):
        EmbeddingKS(alpha=2.0)
    with pytest.raises(ValueError):
        LabelPSI(reference_size=1)


def test_ks_does_not_fire_on_tied_values_of_the_same_distribution():
    # a repeated text (the same embedding) in both windows is no shift
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(300, 8))
    win = rng.normal(size=(150, 8))
    ref[:90] = 0.25
    win[:45] = 0.25
    assert ks_pvalues(ref, win).min() * 8 > 1e-3

"""The metric maths: FID on Gaussians with a known answer, KID and precision/recall on
constructed cases, and the k-NN precision/recall against the prdc package."""

from __future__ import annotations

import numpy as np
import pytest

from facediff.errors import FacediffError
from facediff.eval.metrics import frechet_distance, kernel_distance, precision_recall, score


def _exact(n: int, mean: np.ndarray, cov_sqrt: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose sample mean and sample covariance are exactly mean and L L^T."""
    d = len(mean)
    x = np.random.default_rng(seed).standard_normal((n, d))
    x -= x.mean(axis=0)
    w = np.linalg.cholesky(np.cov(x, rowvar=False))
    x = np.linalg.solve(w, x.T).T  # whitened: sample covariance exactly I
    return x @ cov_sqrt.T + mean


def test_fid_of_gaussians_matches_the_closed_form():
    d = 16
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    x = _exact(500, m1, np.diag(np.sqrt(a)), 1)
    y = _exact(400, m2, np.diag(np.sqrt(b)), 2)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_with_full_covariances_matches_scipy():
    import scipy.linalg

    d = 12
    rng = np.random.default_rng(3)
    l1, l2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    x = _exact(300, rng.normal(size=d), l1, 4)
    y = _exact(300, rng.normal(size=d), l2, 5)
    s1, s2 = l1 @ l1.T, l2 @ l2.T
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-7)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_kid_is_the_unbiased_cubic_mmd_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    y = rng.normal(size=(60, 8)) + 0.5
    mean, std = kernel_distance(x, y, subsets=1, subset_size=60)  # one subset = everything
    assert mean == pytest.approx(_mmd2_unbiased(x, y), rel=1e-9)
    assert std == 0.0
    kids = [kernel_distance(x, rng.normal(size=(60, 8)) + s, subsets=20, subset_size=40)[0]
            for s in (0.0, 0.5, 1.0, 2.0)]
    assert abs(kids[0]) < 0.05 < kids[1] < kids[2] < kids[3]
    again = kernel_distance(x, y, subsets=20, subset_size=40, seed=7)
    assert again == kernel_distance(x, y, subsets=20, subset_size=40, seed=7)  # seeded


def test_precision_recall_on_a_constructed_case():
    real = np.arange(10, dtype=float)[:, None]  # 0..9; with k=1 every real radius is 1
    fake = np.concatenate([np.arange(5), np.arange(100, 105)]).astype(float)[:, None]
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(0.5)  # 0..4 lie on the real manifold, 100..104 do not
    # fake radii are 1, so reals 0..5 are covered (5 is within 1 of 4): recall 6/10
    assert r == pytest.approx(0.6)
    assert precision_recall(real, real + 0.1, k=1) == (1.0, 1.0)
    assert precision_recall(real, real + 1000, k=1) == (0.0, 0.0)


def test_precision_recall_blocks_do_not_change_the_answer():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 5)), rng.normal(size=(250, 5)) * 1.3
    assert precision_recall(real, fake, block=7) == precision_recall(real, fake, block=4096)


def test_precision_recall_agrees_with_prdc():
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 16)).astype(np.float32)
    fake = (rng.normal(size=(350, 16)) * 1.2 + 0.3).astype(np.float32)
    ref = prdc.compute_prdc(real, fake, nearest_k=3)
    p, r = precision_recall(real, fake, k=3)
    assert p == pytest.approx(ref["precision"], abs=1e-9)
    assert r == pytest.approx(ref["recall"], abs=1e-9)


def test_score_reports_counts_and_rejects_too_few():
    rng = np.random.default_rng(0)
    s = score(rng.normal(size=(40, 4)), rng.normal(size=(30, 4)), kid_subsets=5)
    assert (s.n, s.n_ref, s.kid_subset) == (30, 40, 30)
    assert "30 images vs 40 reference" in s.line()
    with pytest.raises(FacediffError):
        score(rng.normal(size=(40, 4)), rng.normal(size=(1, 4)))

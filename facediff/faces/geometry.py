"""2 x 3 affine matrices ``m``, with ``y = m[:, :2] @ x + m[:, 2]``: the similarity fit and the
few operations alignment needs.

The least-squares similarity fit is the closed form of Umeyama (1991) without reflection,
written as one complex division (five points; a dependency such as scikit-image or OpenCV for
it would weigh tens of MB)."""

from __future__ import annotations

import numpy as np


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation + uniform scale + shift taking ``src`` points (N x 2) closest to ``dst``
    (least squares), as a 2 x 3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s = (src[:, 0] - ms[0]) + 1j * (src[:, 1] - ms[1])
    d = (dst[:, 0] - md[0]) + 1j * (dst[:, 1] - md[1])
    z = np.vdot(s, d) / np.vdot(s, s)  # dst ~ z * src: z = scale * e^(i angle)
    r = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.concatenate([r, (md - r @ ms)[:, None]], axis=1)


def invert(m: np.ndarray) -> np.ndarray:
    r = np.linalg.inv(m[:, :2])
    return np.concatenate([r, (-r @ m[:, 2])[:, None]], axis=1)


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine map ``a`` after ``b``."""
    return np.concatenate([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]], axis=1)


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def scale(k: float) -> np.ndarray:
    return np.array([[k, 0.0, 0.0], [0.0, k, 0.0]])


def shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])

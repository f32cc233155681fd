"""Sample-quality metrics on features: FID, KID and precision/recall.

FID and KID are torchmetrics' (``FrechetInceptionDistance``, ``KernelInceptionDistance``),
given features we computed (and cached) ourselves through a pass-through feature module, in
float64. Precision and recall are Kynkaanniemi et al. (2019): a sample is "precise" if it
lies inside the k-NN ball of some real image, a real image is "recalled" if it lies inside
the k-NN ball of some sample (k = 3). torchmetrics has no such metric and the maintained
package (prdc) holds three full N x N distance matrices (10k vs 10k: 1.2 GB; 50k: 30 GB);
this one works in row blocks with torch.cdist, O(block x N) memory, and is checked against
prdc in tests/test_metrics.py.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from facediff.errors import FacediffError


class _Given(nn.Module):
    """A 'feature extractor' for torchmetrics that returns the features it is given."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _features(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    feats = torch.as_tensor(x).double()
    if feats.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(feats.shape)}")
    return feats


def frechet_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID between two feature sets (N, D) (torchmetrics' maths, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    r, f = _features(real), _features(fake)
    if len(r) < 2 or len(f) < 2:
        raise FacediffError("FID needs at least 2 images on each side")
    # sync_on_compute off: the features are already complete (gathered by facediff when
    # several processes sample); torchmetrics would otherwise add every process's copy
    metric = FrechetInceptionDistance(feature=_Given(r.shape[1]),
                                      sync_on_compute=False).double()
    metric.update(r, real=True)
    metric.update(f, real=False)
    return float(metric.compute())


def kernel_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                    *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets) with the cubic polynomial kernel."""
    from torchmetrics.image.kid import KernelInceptionDistance

    r, f = _features(real), _features(fake)
    size = min(subset_size, len(r), len(f))
    if size < 2:
        raise FacediffError("KID needs at least 2 images on each side")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Given(r.shape[1]), subsets=subsets,
                                         subset_size=size, sync_on_compute=False)
    metric.update(r, real=True)
    metric.update(f, real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets use the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radii(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    out = []
    for s in range(0, len(x), block):
        d = torch.cdist(x[s:s + block], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # [:, 0] is itself
    return torch.cat(out)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
             block: int) -> torch.Tensor:
    """For each point: does it lie in some ball (centre, radius)?"""
    out = []
    for s in range(0, len(points), block):
        d = torch.cdist(points[s:s + block], centres)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                     k: int = 3, block: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds."""
    r, f = _features(real), _features(fake)
    if min(len(r), len(f)) <= k:
        raise FacediffError(f"precision/recall with k={k} needs more than {k} images per side")
    r_radii = _kth_neighbour_radii(r, k, block)
    f_radii = _kth_neighbour_radii(f, k, block)
    precision = _covered(f, r, r_radii, block).double().mean()
    recall = _covered(r, f, f_radii, block).double().mean()
    return float(precision), float(recall)


@dataclass
class Scores:
    """Every score with the sample counts it was measured on."""

    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    n: int  # generated (or evaluated) images
    n_ref: int  # reference images
    kid_subset: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def line(self) -> str:
        return (f"FID {self.fid:.2f}  KID {self.kid * 1e3:.2f} ± {self.kid_std * 1e3:.2f} (x1e-3, "
                f"subsets of {self.kid_subset})  precision {self.precision:.3f}  "
                f"recall {self.recall:.3f}  [{self.n} images vs {self.n_ref} reference]")


def score(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, k: int = 3,
          kid_subsets: int = 100, kid_subset_size: int = 1000) -> Scores:
    """FID, KID and precision/recall of ``fake`` features against ``real`` ones."""
    fid = frechet_distance(real, fake)
    size = min(kid_subset_size, len(real), len(fake))
    kid, kid_std = kernel_distance(real, fake, subsets=kid_subsets, subset_size=size)
    p, r = precision_recall(real, fake, k)
    return Scores(fid, kid, kid_std, p, r, len(fake), len(real), size)


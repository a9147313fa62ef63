"""Poisson-Gaussian noise: simulation, single-image estimation, variance stabilisation.

Model (Foi et al. 2008): ``z = y + eta_p(y) + eta_g`` with ``Var[z | y] = a * y + b``,
optionally clipped to the sensor range (Foi 2009). The generalized Anscombe transform
and its inverses follow Makitalo & Foi (2013). :func:`estimate_planes` estimates every
plane of a whole image, block by block, optionally on a Dask cluster.
"""

from fluoden_batch.noise.anscombe import gat_forward, gat_inverse
from fluoden_batch.noise.estimate import NoiseEstimate, estimate
from fluoden_batch.noise.planes import estimate_planes, pool_estimates
from fluoden_batch.noise.simulate import simulate

__all__ = [
    "NoiseEstimate",
    "estimate",
    "estimate_planes",
    "gat_forward",
    "gat_inverse",
    "pool_estimates",
    "simulate",
]

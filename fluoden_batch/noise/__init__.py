"""Poisson-Gaussian noise: simulation, single-image estimation, variance stabilisation.

Model (Foi et al. 2008): ``z = y + eta_p(y) + eta_g`` with ``Var[z | y] = a * y + b``,
optionally clipped to the sensor range (Foi 2009). The generalized Anscombe transform
and its inverses follow Makitalo & Foi (2013). :mod:`~fluoden_batch.noise.planes` pools
the estimates of a plane's regions (run on Dask by :mod:`fluoden_batch.pipeline.noise`).
"""

from fluoden_batch.noise.anscombe import gat_forward, gat_inverse
from fluoden_batch.noise.estimate import NoiseEstimate, estimate
from fluoden_batch.noise.planes import pool_estimates
from fluoden_batch.noise.simulate import simulate

__all__ = [
    "NoiseEstimate",
    "estimate",
    "gat_forward",
    "gat_inverse",
    "pool_estimates",
    "simulate",
]

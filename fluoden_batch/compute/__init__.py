"""Which Dask cluster a run uses: a local one, a running scheduler, or a deploy profile.

Every command gets its :class:`distributed.Client` from :func:`dask_client`; the pipeline
never knows where the workers live. Local clusters bind the scheduler and the dashboard
to 127.0.0.1; TLS certificates come from :mod:`fluoden_batch.compute.security`.

Deploy profiles (:mod:`~fluoden_batch.compute.profiles`) are small YAML files.

A profile names its kind in ``cluster:`` and holds only that kind's settings; unknown
keys are errors. The kinds and what they start:

``local``        :class:`distributed.LocalCluster`, worker processes on this machine.
``local-cuda``   :class:`dask_cuda.LocalCUDACluster`, one worker per GPU of a workstation.
``slurm``        :class:`dask_jobqueue.SLURMCluster`, one batch job per worker (or per
                 ``processes`` workers); the scheduler runs where ``fluoden`` runs.
``kubernetes``   :class:`dask_kubernetes.operator.KubeCluster`, a ``DaskCluster`` resource
                 handled by the Dask operator; workers are pods of the given image.

:func:`profile_cluster` starts the cluster, scales it, yields a :class:`distributed.Client`
and tears everything down on exit; the pipeline only sees the client.

GPU placement: the workers of a GPU profile advertise the abstract resource ``GPU=1`` and
:func:`gpu_resources` gives the ``resources=`` for ``client.map``, so each block task holds
one GPU of its worker. Pass it to ``client.map``: ``dask.annotate(resources=...)`` is lost
when the graph is fused (low-level optimisation), and the tasks would pile onto one GPU.
"""

from fluoden_batch.compute.clusters import (
    dry_run,
    kubernetes_spec,
    profile_cluster,
    render_job_script,
    slurm_kwargs,
)
from fluoden_batch.compute.local import dask_client, default_workers
from fluoden_batch.compute.profiles import (
    GPU_RESOURCE,
    KINDS,
    KubernetesProfile,
    LocalCUDAProfile,
    LocalProfile,
    Profile,
    ProfileError,
    SlurmProfile,
    gpu_resources,
    load_profile,
    validate_profile,
)
from fluoden_batch.compute.security import SecurityError, make_security, write_self_signed

__all__ = [
    "GPU_RESOURCE",
    "KINDS",
    "KubernetesProfile",
    "LocalCUDAProfile",
    "LocalProfile",
    "Profile",
    "ProfileError",
    "SecurityError",
    "SlurmProfile",
    "dask_client",
    "default_workers",
    "dry_run",
    "gpu_resources",
    "kubernetes_spec",
    "load_profile",
    "make_security",
    "profile_cluster",
    "render_job_script",
    "slurm_kwargs",
    "validate_profile",
    "write_self_signed",
]

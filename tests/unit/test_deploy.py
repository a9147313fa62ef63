"""Deploy profiles: validation with clear errors, SLURM job scripts, Kubernetes specs, and
how each profile kind is wired to its cluster class (without SLURM, Kubernetes or a GPU)."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from fluoden_batch.compute import (
    KubernetesProfile,
    LocalCUDAProfile,
    LocalProfile,
    ProfileError,
    SlurmProfile,
    dask_client,
    dry_run,
    gpu_resources,
    kubernetes_spec,
    load_profile,
    profile_cluster,
    render_job_script,
    slurm_kwargs,
    validate_profile,
)
from fluoden_batch.compute.clusters import PLACEHOLDER_SCHEDULER, worker_lifetime
from fluoden_batch.compute.profiles import walltime_seconds
from fluoden_batch.compute.security import make_security, write_self_signed
from fluoden_batch.errors import FluodenError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KIND_BY_FOLDER = {
    "slurm": SlurmProfile,
    "kubernetes": KubernetesProfile,
    "gpu": LocalCUDAProfile,
    "deploy": LocalProfile,
}

CPU = {
    "cluster": "slurm",
    "partition": "cpu",
    "account": "lab42",
    "cores": 8,
    "processes": 2,
    "memory": "32GiB",
    "walltime": "02:30:00",
    "interface": "ib0",
    "local_directory": "$TMPDIR",
    "job_script_prologue": ["module load python/3.11", "source /shared/venv/bin/activate"],
}
GPU = {
    **CPU,
    "partition": "gpu",
    "cores": 4,
    "processes": 1,
    "memory": "64GiB",
    "walltime": "1-00:00:00",
    "gpu": True,
    "job_extra_directives": ["--gres=gpu:1", "--constraint=a100"],
}


def profile_file(tmp_path: Path, data: dict | str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# --- every shipped profile ------------------------------------------------------------------


DEPLOY_YAMLS = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_deploy_folder_has_the_profiles():
    names = {str(p.relative_to(DEPLOY)) for p in DEPLOY_YAMLS}
    assert {
        "local.yaml",
        "slurm/cpu.yaml",
        "slurm/gpu.yaml",
        "kubernetes/cluster.yaml",
        "gpu/local-cuda.yaml",
    } <= names
    for folder in ("slurm", "kubernetes", "gpu", "container"):
        assert (DEPLOY / folder / "README.md").is_file()
    assert (DEPLOY / "README.md").is_file()


@pytest.mark.parametrize("path", DEPLOY_YAMLS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_validates(path):
    profile = load_profile(path)
    assert isinstance(profile, KIND_BY_FOLDER[path.parent.name])


def test_shipped_slurm_profiles_render(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)  # a job creates its log directory: make sure the render does not
    cpu = render_job_script(load_profile(DEPLOY / "slurm" / "cpu.yaml"), workers=16)
    gpu = render_job_script(load_profile(DEPLOY / "slurm" / "gpu.yaml"))
    assert "#SBATCH -p cpu" in cpu and "--resources GPU=1" not in cpu
    assert "#SBATCH -p gpu" in gpu and "--resources GPU=1" in gpu
    assert gpu.count("--gres=gpu:1") == 1
    assert "16 workers = 8 job(s)" in cpu
    assert list(tmp_path.iterdir()) == []


def test_sbatch_script_is_valid_bash_and_runs_the_cli():
    script = DEPLOY / "slurm" / "fluoden.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert 'fluoden "${args[@]}"' in text and "--profile" in text
    assert "deploy/slurm/cpu.yaml" in text and text.startswith("#!")


# --- SLURM job scripts ----------------------------------------------------------------------


@pytest.fixture
def jobqueue():
    return pytest.importorskip("dask_jobqueue")


def test_cpu_job_script(jobqueue):
    script = render_job_script(validate_profile(CPU), workers=6)
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for line in (
        "#SBATCH -J fluoden",
        "#SBATCH -p cpu",
        "#SBATCH -A lab42",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 02:30:00",
    ):
        assert line in lines
    assert "--gres" not in script and "GPU=1" not in script
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    for part in (
        "--nthreads 4",
        "--nworkers 2",
        "--memory-limit 16.00GiB",
        "--interface ib0",
        '--local-directory "$TMPDIR"',
        "--lifetime 7800s --lifetime-stagger 300s",  # 2.5 h less 15 min, less the stagger
    ):
        assert part in worker
    prologue = [lines.index(line) for line in CPU["job_script_prologue"]]
    assert prologue == sorted(prologue) and max(prologue) < lines.index(worker)
    assert lines[-1] == "# fluoden: 6 workers = 3 job(s) of this script, 2 worker process(es) each"


def test_gpu_job_script(jobqueue):
    script = render_job_script(validate_profile(GPU), workers=3)
    lines = script.splitlines()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH --mem=64G",
        "#SBATCH -t 1-00:00:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --constraint=a100",
    ):
        assert line in lines
    assert lines.count("#SBATCH --gres=gpu:1") == 1
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--resources GPU=1" in worker and "--nworkers" not in worker
    assert "3 workers = 3 job(s)" in script


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ([], "#SBATCH --gres=gpu:1"),
        (["--gpus=1"], "#SBATCH --gpus=1"),
        (["--gres=gpu:a100:1"], None),
    ],
)
def test_gpu_job_requests_a_gpu_once(jobqueue, directives, expected):
    script = render_job_script(validate_profile({**GPU, "job_extra_directives": directives}))
    gpu_lines = [x for x in script.splitlines() if "--gres" in x or "--gpus" in x]
    assert len(gpu_lines) == 1
    assert expected is None or gpu_lines == [expected]


def test_tls_job_script_passes_the_certificates(jobqueue, tmp_path):
    write_self_signed(tmp_path)
    security = make_security(tmp_path)
    script = render_job_script(validate_profile(CPU), security=security)
    assert "tls://<insert-scheduler-address-here>:8786" in script
    for flag, name in (
        ("--tls-ca-file", "ca.pem"),
        ("--tls-cert", "cert.pem"),
        ("--tls-key", "key.pem"),
    ):
        assert f"{flag} {tmp_path.resolve() / name}" in script


@pytest.mark.distributed
def test_rendered_script_is_what_slurmcluster_submits(jobqueue, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile = validate_profile(
        {**CPU, "interface": None, "scheduler_host": "127.0.0.1", "log_directory": "logs"}
    )
    kwargs = slurm_kwargs(profile)
    kwargs["scheduler_options"]["dashboard_address"] = "127.0.0.1:0"
    with jobqueue.SLURMCluster(**kwargs) as cluster:
        address = cluster.scheduler_address
        real = cluster.job_script()
    assert address.startswith("tcp://127.0.0.1:")
    ours = render_job_script(profile).replace("tcp://<insert-scheduler-address-here>:8786", address)
    assert ours.rsplit("\n# fluoden:", 1)[0] == real.rstrip("\n")


def worker_argv(script: str, env: dict[str, str]) -> list[str]:
    """The argument vector the job script's worker line gets from bash under ``env``
    (the profile's python is ``printf '%s\\n'``, which prints each argument on a line)."""
    runnable = script.replace(PLACEHOLDER_SCHEDULER, "127.0.0.1:8786")
    done = subprocess.run(
        ["bash", "-c", runnable], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    ("local_directory", "tmpdir", "expected"),
    [
        ("${TMPDIR:-/tmp}", None, "/tmp"),  # the shipped profiles' value, TMPDIR unset
        ("${TMPDIR:-/tmp}", "/scratch/job 42", "/scratch/job 42"),
        ("$TMPDIR", None, ""),  # empty, but still the value of --local-directory
        ("/local/$USER", None, "/local/alice"),
    ],
)
def test_local_directory_is_one_word_whatever_the_environment(
    jobqueue, local_directory, tmpdir, expected
):
    profile = validate_profile(
        {**CPU, "job_script_prologue": [], "python": "printf '%s\\n'",
         "local_directory": local_directory}
    )  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "USER": "alice"}
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    argv = worker_argv(render_job_script(profile), env)
    assert argv[argv.index("--local-directory") + 1] == expected
    assert argv[argv.index("--interface") + 1] == "ib0"  # not swallowed (issue: "extra ib0")
    assert argv[:3] == ["-m", "distributed.cli.dask_worker", "tcp://127.0.0.1:8786"]


def test_shipped_slurm_profiles_survive_an_unset_tmpdir(jobqueue, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("cpu.yaml", "gpu.yaml"):
        data = yaml.safe_load((DEPLOY / "slurm" / name).read_text())
        data.update(job_script_prologue=[], python="printf '%s\\n'")
        argv = worker_argv(render_job_script(validate_profile(data)), {"PATH": "/usr/bin:/bin"})
        assert argv[argv.index("--local-directory") + 1] == "/tmp"
        assert argv[argv.index("--interface") + 1] == "ib0"


@pytest.mark.parametrize("walltime", ["1", "00:05:00", "01:00:00", "04:00:00", "2-00:00:00"])
def test_workers_retire_before_the_walltime(walltime):
    args = worker_lifetime(walltime)
    lifetime = int(args[args.index("--lifetime") + 1].removesuffix("s"))
    stagger = int(args[args.index("--lifetime-stagger") + 1].removesuffix("s"))
    total = walltime_seconds(walltime)
    # the latest end (lifetime + stagger) leaves at least 20 s, or a tenth, for start-up
    assert lifetime + stagger <= total - max(20, min(900, total // 10))
    assert lifetime - stagger >= total / 2  # and the worker works most of its job
    assert "--lifetime-restart" not in args  # it would restart inside the dying job


def test_lifetime_in_the_job_script_and_a_profile_of_its_own(jobqueue):
    worker = next(
        line
        for line in render_job_script(validate_profile({**CPU, "walltime": "1"})).splitlines()
        if "dask_worker" in line
    )
    assert "--lifetime 37s --lifetime-stagger 3s" in worker
    own = {**CPU, "worker_extra_args": ["--lifetime", "50m", "--lifetime-stagger", "1m"]}
    kwargs = slurm_kwargs(validate_profile(own))
    assert kwargs["worker_extra_args"] == ["--lifetime", "50m", "--lifetime-stagger", "1m"]
    assert worker_lifetime("0") == []  # no limit, no lifetime
    with pytest.raises(ProfileError, match="smallest time limit, one minute"):
        validate_profile({**CPU, "walltime": "00:30"})


# --- validation errors ----------------------------------------------------------------------


INVALID = [
    ({**CPU, "corez": 8}, ["unknown field 'corez'", "allowed:", "cores"]),
    ({**CPU, "cores": -2}, ["field 'cores'", "greater than or equal to 1"]),
    ({**CPU, "walltime": "2 hours"}, ["field 'walltime'", "not a SLURM time"]),
    ("cluster: slurm\ncores: 1\nmemory: 1GiB\ninterface: lo\nwalltime: 1:00:00\n", ["quote it"]),
    ({**CPU, "memory": "lots"}, ["field 'memory'", "not a memory size"]),
    ({**CPU, "cores": None}, ["field 'cores'"]),
    ({k: v for k, v in CPU.items() if k != "memory"}, ["field 'memory'", "Field required"]),
    ({**CPU, "interface": None}, ["interface", "scheduler_host"]),
    ({**CPU, "processes": 16}, ["processes=16 exceeds cores=8"]),
    ({**GPU, "processes": 2}, ["set processes: 1"]),
    ({**CPU, "job_extra_directives": ["#SBATCH --qos=x"]}, ["job_extra_directives", "no #SBATCH"]),
    ({"cluster": "pbs", "cores": 1}, ["field 'cluster'", "'pbs' is not one of local, local-cuda"]),
    ({"n_workers": 2}, ["field 'cluster' is missing"]),
    ({"cluster": "local", "n_workers": 0}, ["field 'n_workers'"]),
    ({"cluster": "local", "memory_limit": "4 apples"}, ["field 'memory_limit'"]),
    (
        {"cluster": "local-cuda", "CUDA_VISIBLE_DEVICES": [0], "n_workers": 2},
        ["n_workers=2 but only 1 GPUs"],
    ),
    ({"cluster": "kubernetes", "name": "x"}, ["field 'image'", "Field required"]),
    ({"cluster": "kubernetes", "image": "i", "name": "Bad_Name"}, ["field 'name'"]),
    (
        {"cluster": "kubernetes", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 2}}},
        ["one GPU per worker pod"],
    ),
    (
        {"cluster": "kubernetes", "image": "i", "resources": {"limitz": {}}},
        ["field 'resources.limitz'", "Extra inputs"],
    ),
    ("- cluster: local\n", ["expected a mapping"]),
    ("cluster: [local\n", ["not valid YAML"]),
]


@pytest.mark.parametrize(("data", "phrases"), INVALID)
def test_invalid_profiles_name_file_and_field(tmp_path, data, phrases):
    path = profile_file(tmp_path, data, "site-profile.yaml")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"profile {path}")
    for phrase in phrases:
        assert phrase in message


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match=r"nope\.yaml: No such file"):
        load_profile(tmp_path / "nope.yaml")
    assert issubclass(ProfileError, FluodenError)


def test_partition_is_an_alias_of_queue():
    a = validate_profile({**CPU, "partition": "short"})
    b = validate_profile({**{k: v for k, v in CPU.items() if k != "partition"}, "queue": "short"})
    assert a.queue == b.queue == "short"


# --- GPU placement, Kubernetes spec, dry runs ----------------------------------------------


def test_gpu_resources():
    assert gpu_resources(validate_profile({"cluster": "local"})) is None
    assert gpu_resources(validate_profile(CPU)) is None
    assert gpu_resources(validate_profile(GPU)) == {"GPU": 1}
    assert gpu_resources(validate_profile({"cluster": "local-cuda"})) == {"GPU": 1}
    kube = {"cluster": "kubernetes", "image": "img"}
    assert gpu_resources(validate_profile(kube)) is None
    gpu_kube = {**kube, "resources": {"limits": {"nvidia.com/gpu": 1}}}
    assert gpu_resources(validate_profile(gpu_kube)) == {"GPU": 1}


def test_kubernetes_spec_for_gpu_workers():
    pytest.importorskip("dask_kubernetes")
    profile = load_profile(DEPLOY / "kubernetes" / "cluster-gpu.yaml")
    spec = kubernetes_spec(profile, workers=3)
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["namespace"] == "imaging"
    worker_pod = spec["spec"]["worker"]["spec"]
    worker = worker_pod["containers"][0]
    assert spec["spec"]["worker"]["replicas"] == 3
    assert worker["args"][:6] == ["dask", "worker", "--nthreads", "4", "--resources", "GPU=1"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"  # the CRD wants strings
    assert worker["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert worker_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert "nvidia.com/gpu" not in str(scheduler["resources"])
    rendered = yaml.safe_load(dry_run(profile, 3))
    name = rendered["metadata"]["name"]
    assert name != spec["metadata"]["name"]  # a name of its own per run
    assert rendered == kubernetes_spec(profile, workers=3, name=name)


KUBE = {"cluster": "kubernetes", "image": "fluoden-batch:0.1.0-cpu", "namespace": "lab"}


def test_two_runs_never_share_a_cluster_name():
    pytest.importorskip("dask_kubernetes")
    profile = validate_profile(KUBE)
    names = [kubernetes_spec(profile)["metadata"]["name"] for _ in range(200)]
    names += [yaml.safe_load(dry_run(profile))["metadata"]["name"] for _ in range(2)]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"fluoden-[0-9a-f]{8}", name)
    spec = kubernetes_spec(profile, name="fluoden-run1")
    selector = spec["spec"]["scheduler"]["service"]["selector"]
    assert selector["dask.org/cluster-name"] == "fluoden-run1"  # its service finds its pod


def test_pod_spec_passes_extra_keys_to_both_pods():
    pytest.importorskip("dask_kubernetes")
    extra = {
        "imagePullSecrets": [{"name": "lab-registry"}],
        "securityContext": {"runAsUser": 1000, "fsGroup": 1000},
        "priorityClassName": "batch-low",
    }
    spec = kubernetes_spec(validate_profile({**KUBE, "pod_spec": extra}))
    for pod in (spec["spec"]["worker"]["spec"], spec["spec"]["scheduler"]["spec"]):
        assert {k: pod[k] for k in extra} == extra
        assert pod["containers"][0]["image"] == "fluoden-batch:0.1.0-cpu"


@pytest.mark.parametrize(
    ("key", "field"),
    [("containers", "image, resources"), ("volumes", "volumes"), ("tolerations", "tolerations")],
)
def test_pod_spec_cannot_replace_what_fluoden_sets(key, field):
    with pytest.raises(
        ProfileError, match=rf"field 'pod_spec': '{key}' is set by fluoden.*{field}"
    ):
        validate_profile({**KUBE, "pod_spec": {key: []}})


def test_shipped_kubernetes_images_are_the_documented_build_tags():
    """Each profile's image is a tag that deploy/container/README.md's build commands
    produce from the Dockerfile, for this package version."""
    from importlib.metadata import version

    commands = (DEPLOY / "container" / "README.md").read_text()
    for name in ("cluster.yaml", "cluster-gpu.yaml"):
        image = load_profile(DEPLOY / "kubernetes" / name).image
        assert re.search(
            rf"docker build -f deploy/container/Dockerfile.*?-t {image} \.", commands, re.S
        )
        assert image.split(":")[1].startswith(version("fluoden-batch") + "-")
    dockerfile = (DEPLOY / "container" / "Dockerfile").read_text()
    assert "--uid 1000" in dockerfile  # the uid the profiles' securityContext runs as


def test_local_dry_run_describes_the_cluster():
    text = dry_run(load_profile(DEPLOY / "local.yaml"), workers=3, security=make_security(True))
    assert "127.0.0.1" in text and "3 worker(s)" in text and "tls" in text


# --- wiring of profile_cluster, with stand-ins for the cluster classes ----------------------


def enter(context) -> None:
    """Enter and leave a context manager (its errors propagate)."""
    with context:
        pass


class Captured(Exception):
    def __init__(self, kwargs):
        self.kwargs = kwargs


def capture(**kwargs):
    raise Captured(kwargs)


def test_local_cuda_wiring(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=capture))
    profile = validate_profile(
        {"cluster": "local-cuda", "CUDA_VISIBLE_DEVICES": [0, 1], "rmm_pool_size": "2GiB"}
    )
    security = make_security(True)
    with pytest.raises(Captured) as info, profile_cluster(profile, workers=1, security=security):
        pass
    kw = info.value.kwargs
    assert kw["CUDA_VISIBLE_DEVICES"] == ["0", "1"] and kw["n_workers"] == 1
    assert kw["resources"] == {"GPU": 1} and kw["rmm_pool_size"] == "2GiB"
    assert kw["host"] == "127.0.0.1" and kw["dashboard_address"] == "127.0.0.1:8787"
    assert kw["protocol"] == "tls://" and kw["security"] is security


@pytest.mark.parametrize(
    ("module", "data", "phrase"),
    [
        ("dask_cuda", {"cluster": "local-cuda"}, "pip install fluoden-batch[gpu]"),
        ("dask_jobqueue", CPU, "pip install fluoden-batch[cluster]"),
        ("dask_kubernetes.operator", {"cluster": "kubernetes", "image": "i"}, "[cluster]"),
    ],
)
def test_missing_cluster_package_is_a_clear_error(monkeypatch, module, data, phrase):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ProfileError, match=r"needs .*" + phrase.replace("[", r"\[")):
        enter(profile_cluster(validate_profile(data)))


def test_kubernetes_wiring(monkeypatch):
    operator = pytest.importorskip("dask_kubernetes.operator")
    monkeypatch.setattr(operator, "KubeCluster", capture)
    profile = load_profile(DEPLOY / "kubernetes" / "cluster.yaml")
    with pytest.raises(Captured) as info, profile_cluster(profile, workers=5):
        pass
    kw = info.value.kwargs
    spec = kw["custom_cluster_spec"]
    name = spec["metadata"]["name"]
    assert spec == kubernetes_spec(profile, 5, name=name)
    assert re.fullmatch(r"fluoden-[0-9a-f]{8}", name)
    assert kw["namespace"] == "imaging" and kw["shutdown_on_close"] is True
    assert kw["create_mode"].value == "CREATE_ONLY"  # never attach to another run's cluster
    assert kw["resource_timeout"] == 600
    with pytest.raises(ProfileError, match="NetworkPolicy"):
        enter(profile_cluster(profile, security=make_security(True)))


def test_dask_client_rejects_contradicting_options(tmp_path):
    with pytest.raises(FluodenError, match="not both"):
        enter(dask_client(scheduler="tcp://127.0.0.1:1", profile=DEPLOY / "local.yaml"))
    with pytest.raises(FluodenError, match="temporary TLS certificates cannot join"):
        enter(dask_client(scheduler="tls://127.0.0.1:1", tls=True))
    with pytest.raises(FluodenError, match="uses TLS: pass --tls"):
        enter(dask_client(scheduler="tls://127.0.0.1:1"))
    with pytest.raises(FluodenError, match=r"lacks ca\.pem, cert\.pem, key\.pem"):
        enter(dask_client(tls=tmp_path))
    with pytest.raises(ProfileError, match=r"nope\.yaml"):
        enter(dask_client(profile=tmp_path / "nope.yaml"))


@pytest.mark.gpu
@pytest.mark.distributed
def test_local_cuda_profile_on_real_gpus():
    pytest.importorskip("dask_cuda", reason="dask-cuda not installed")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    profile = validate_profile(
        {"cluster": "local-cuda", "n_workers": 1, "dashboard_address": "127.0.0.1:0"}
    )
    with profile_cluster(profile) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["resources"] == {"GPU": 1}
        assert worker["host"] == "127.0.0.1"
        future = client.submit(
            lambda: __import__("torch").cuda.is_available(), resources=gpu_resources(profile)
        )
        assert future.result(timeout=60) is True

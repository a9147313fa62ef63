"""The DaskCluster resources fluoden renders, validated against the CRD schema that the
installed dask-kubernetes ships for its operator (no Kubernetes cluster needed).

The schema is the operator Helm chart's ``crds/daskcluster.yaml`` (the resolved
``openAPIV3Schema``). Kubernetes prunes, or with strict field validation refuses, keys a
structural schema does not declare; JSON Schema allows them. So the test closes every object
that declares properties (``additionalProperties: false``) unless the schema keeps unknown
fields: a misspelt PodSpec key fails here instead of vanishing on the API server.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluoden_batch.compute import kubernetes_spec, load_profile, validate_profile

jsonschema = pytest.importorskip("jsonschema")
dask_kubernetes = pytest.importorskip("dask_kubernetes")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CRD = (
    Path(dask_kubernetes.__file__).parent
    / "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
)
# a DNS-1035 label, as for the scheduler Service the operator names <cluster>-scheduler
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its
    properties and neither allows other keys nor preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> Any:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == "DaskCluster"
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # every Kubernetes object has these at the top, outside its CRD's own schema
    schema["properties"].update(
        apiVersion={"type": "string", "enum": [f"{crd['spec']['group']}/v1"]},
        kind={"type": "string", "enum": ["DaskCluster"]},
        metadata={
            "type": "object",
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            "required": ["name"],
        },
    )
    schema = closed(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def problems(validator: Any, spec: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(spec)
    ]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gpu.yaml"])
def test_shipped_profiles_render_a_valid_daskcluster(validator, name):
    spec = kubernetes_spec(load_profile(DEPLOY / "kubernetes" / name), workers=3)
    assert problems(validator, spec) == []
    cluster_name = spec["metadata"]["name"]
    assert DNS_LABEL.match(f"{cluster_name}-scheduler")


NODE_AFFINITY = "requiredDuringSchedulingIgnoredDuringExecution"
POOL = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]}


def test_pass_through_pod_keys_are_valid_podspec(validator):
    profile = validate_profile(
        {
            "cluster": "kubernetes",
            "name": "a" * 40,  # the longest prefix: the service name still fits 63
            "image": "registry.example.org/lab/fluoden-batch:0.1.0-cpu",
            "resources": {"limits": {"cpu": 4, "memory": "16Gi", "nvidia.com/gpu": 1}},
            "pod_spec": {
                "imagePullSecrets": [{"name": "lab-registry"}],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                "serviceAccountName": "fluoden",
                "priorityClassName": "batch-low",
                "affinity": {"nodeAffinity": {NODE_AFFINITY: {"nodeSelectorTerms": [POOL]}}},
            },
        }
    )
    spec = kubernetes_spec(profile)
    assert problems(validator, spec) == []
    assert DNS_LABEL.match(f"{spec['metadata']['name']}-scheduler")


@pytest.mark.parametrize(
    ("pod_spec", "where"),
    [
        ({"imagePullSecret": [{"name": "x"}]}, "imagePullSecret"),  # misspelt key
        ({"securityContext": {"fsGroup": "1000"}}, "securityContext.fsGroup"),  # wrong type
        ({"securityContext": {"fsgroup": 1000}}, "fsgroup"),
    ],
)
def test_the_schema_check_catches_bad_pod_keys(validator, pod_spec, where):
    profile = validate_profile({"cluster": "kubernetes", "image": "i", "pod_spec": pod_spec})
    found = problems(validator, kubernetes_spec(profile))
    assert len(found) == 2, found  # once in the worker pod, once in the scheduler pod
    assert all(where in p for p in found)


def test_integer_quantities_would_be_refused(validator):
    """Why kubernetes_spec writes every quantity as a string: the CRD types them so."""
    profile = validate_profile(
        {"cluster": "kubernetes", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}
    )
    spec = kubernetes_spec(profile)
    assert problems(validator, spec) == []
    spec["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert any("is not of type 'string'" in p for p in problems(validator, spec))

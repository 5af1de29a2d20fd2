"""The deployment files (issue 17 point 4), checked against the schemas of what reads them:
Kubernetes' own (kubernetes-validate ships them, per release: strict, so an unknown field is an
error), Ray Serve's config schema (``ray.serve.schema.ServeDeploySchema``), and the application
builder itself (its args are all known and build an application). KubeRay's RayService CRD
schema is not shipped by any package here: its pod templates are checked as Kubernetes
PodTemplateSpecs and its serveConfigV2 as a Serve config; the rest of it is checked by hand below."""

from __future__ import annotations

import pytest
import yaml

from tests.support import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
serve_schema = pytest.importorskip("ray.serve.schema")

K8S = "1.30.0"
DEPLOY = ROOT / "deploy"


def _documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _valid(doc) -> None:
    kubernetes_validate.validate(doc, K8S, strict=True)


def test_single_node_manifests_are_valid_kubernetes():
    docs = _documents(DEPLOY / "k8s" / "gradserve.yaml")
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        _valid(doc)
    deployment, service, hpa = docs
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_an_invalid_manifest_is_refused():
    doc = _documents(DEPLOY / "k8s" / "gradserve.yaml")[0]
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _valid(doc)
    doc = _documents(DEPLOY / "k8s" / "gradserve.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["prots"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        _valid(doc)


def _pod_template(template) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}


def test_rayservice_has_gpu_workers_and_a_valid_serve_config():
    (doc,) = _documents(DEPLOY / "k8s" / "rayservice.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    spec = doc["spec"]
    cluster = spec["rayClusterConfig"]
    assert set(cluster) <= {"rayVersion", "enableInTreeAutoscaling", "headGroupSpec", "workerGroupSpecs",
                            "autoscalerOptions"}
    _valid(_pod_template(cluster["headGroupSpec"]["template"]))
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}
        _valid(_pod_template(group["template"]))
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    config = serve_schema.ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    (app,) = config.applications
    assert app.import_path == "service.cluster:build_app" and app.args["device"] == "gpu"


def test_serve_yaml_is_a_serve_config_whose_args_build_the_app():
    from service.cluster import build_app

    raw = yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text())
    config = serve_schema.ServeDeploySchema.model_validate(raw)
    (app,) = config.applications
    assert app.import_path == "service.cluster:build_app"
    built = build_app(app.args)
    assert type(built).__name__ == "Application"
    with pytest.raises(ValueError, match="unknown args"):
        build_app({**app.args, "max_replica": 3})
    # the RayService carries the same application
    (doc,) = _documents(DEPLOY / "k8s" / "rayservice.yaml")
    (in_k8s,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    assert in_k8s["import_path"] == raw["applications"][0]["import_path"]
    assert {k: v for k, v in in_k8s["args"].items()} == {k: v for k, v in app.args.items() if k in in_k8s["args"]}

"""The Kubernetes manifests in deploy/k8s.

`kubectl kustomize` shows that `kubectl apply -k deploy/k8s` would render (skipped where
kubectl is missing); everything else reads the YAML files with PyYAML alone: the core
kinds are validated against the Kubernetes 1.32 schemas (kubernetes-validate, strict, so
a misspelt field fails), KEDA's kinds, which those schemas do not know, are checked for
what visionq relies on, and the cross-references between objects, the settings and the
commands are checked against the code that reads them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from visionq.broker import QUEUES
from visionq.cli import parser
from visionq.errors import ConfigurationError
from visionq.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
KUBERNETES_VERSION = "1.32"
KEDA_API = "keda.sh/v1alpha1"
IMAGE = "visionq"
#: Where our containers get a writable emptyDir on their read-only root filesystem.
TMP = "/tmp"  # noqa: S108 (a mount path in the manifests, not a file this test uses)

#: Variables our containers may be given that visionq's own code does not read through
#: `Settings.from_env`: boto3 reads the AWS ones itself (for s3:// storage),
#: prometheus-client the multiprocess directory, Flower its credentials.
THIRD_PARTY_VARIABLES = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "PROMETHEUS_MULTIPROC_DIR",
    "FLOWER_BASIC_AUTH",
}

#: Well-formed stand-ins for the secret's placeholders.
SECRET_VALUES = {
    "MIMO_API_KEY": "sk-test",
    "VISIONQ_API_KEYS": "tenant-a:key-a",
    "VISIONQ_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "VISIONQ_REDIS_URL": "redis://:password@redis:6379/0",
    "AWS_ACCESS_KEY_ID": "AKIATEST",
    "AWS_SECRET_ACCESS_KEY": "secret",
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object in deploy/k8s, the optional files included."""
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path != KUSTOMIZATION
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text())


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every Deployment and StatefulSet."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            yield doc, doc["spec"]["template"]


def _containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload, template in _pod_specs(docs):
        for container in template["spec"]["containers"]:
            yield workload["metadata"]["name"], container


def _visionq_workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workload name -> its container, for workloads running our image's entrypoint."""
    return {
        name: container
        for name, container in _containers(docs)
        if container["image"].split(":")[0] == IMAGE and "command" not in container
    }


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (`500m`, `2`, `512Mi`, `4Gi`) as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(value))
    assert match, value
    scale = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}[match.group(2)]
    return float(match.group(1)) * scale


def _seconds(duration: str) -> int:
    """A compose duration such as `1m` or `30s`."""
    match = re.fullmatch(r"(\d+)([sm])", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


class _Recorder(Mapping[str, str]):
    """An empty environment that remembers every variable asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _settings_variables() -> set[str]:
    """Every variable `Settings.from_env` looks up (it asks the mapping it is given)."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    return recorder.asked


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [doc for _, doc in _documents()]


@pytest.fixture(scope="module")
def core() -> list[dict[str, Any]]:
    """What `kubectl apply -k` applies: the objects of kustomization.yaml's resources."""
    resources = set(_kustomization()["resources"])
    return [doc for name, doc in _documents() if name in resources]


def test_kustomize_renders(core: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH; the other tests check the files without it")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rendered = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    kustomization = _kustomization()

    def names(objects: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
        return Counter((o["kind"], o["metadata"]["name"]) for o in objects)

    assert names(rendered) == names(core)
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == kustomization["namespace"], obj["kind"]
    (image,) = kustomization["images"]
    assert {c["image"] for _, c in _containers(rendered)} == {
        f"{image['newName']}:{image['newTag']}"
    }


def test_optional_files_say_how_to_apply_them() -> None:
    kustomization = _kustomization()
    files = {path.name for path in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert set(kustomization["resources"]) <= files
    optional = files - set(kustomization["resources"])
    assert optional == {"flower.yaml", "redis-trial.yaml"}
    for name in optional:
        text = (K8S / name).read_text()
        assert f"apply -f deploy/k8s/{name}" in text, name
        for doc in yaml.safe_load_all(text):
            assert doc["metadata"]["namespace"] == kustomization["namespace"], name
    assert "FOR TRIALS ONLY" in (K8S / "redis-trial.yaml").read_text()


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in _documents() if doc["apiVersion"] != KEDA_API],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_core_kinds_validate(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


def test_keda_scales_each_worker_on_its_queue(core: list[dict[str, Any]]) -> None:
    keda = [doc for doc in core if doc["apiVersion"] == KEDA_API]
    assert {doc["kind"] for doc in keda} == {"ScaledObject", "TriggerAuthentication"}
    workers = {
        name: parser().parse_args(container["args"]).queues
        for name, container in _visionq_workloads(core).items()
        if container["args"][0] == "worker"
    }
    assert sorted(workers.values()) == sorted(QUEUES)
    namespace = _kustomization()["namespace"]
    redis_service = _one([doc for _, doc in _documents()], "Service", "redis")
    (redis_port,) = [p["port"] for p in redis_service["spec"]["ports"]]

    scaled = [doc for doc in keda if doc["kind"] == "ScaledObject"]
    assert Counter(doc["spec"]["scaleTargetRef"]["name"] for doc in scaled) == Counter(set(workers))
    for doc in scaled:
        spec = doc["spec"]
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert meta["listName"] in QUEUES
        assert meta["listName"] == workers[target["name"]]
        assert int(meta["listLength"]) > 0
        # KEDA's operator lives in its own namespace: the Service needs its full name.
        assert meta["address"] == f"redis.{namespace}.svc.cluster.local:{redis_port}"
        auth = _one(keda, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["parameter"] in {"password", "username"}
            assert ref["key"] in _one(core, "Secret", ref["name"])["stringData"]


def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(
    core: list[dict[str, Any]],
) -> None:
    hpas = [doc for doc in core if doc["kind"] == "HorizontalPodAutoscaler"]
    (hpa,) = hpas
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "api",
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    # The HPA scales on CPU utilisation, a share of the request: the request must be set.
    api = _visionq_workloads(core)["api"]
    assert "cpu" in api["resources"]["requests"]

    scaled = {target["name"]} | {
        doc["spec"]["scaleTargetRef"]["name"] for doc in core if doc["kind"] == "ScaledObject"
    }
    for name in scaled:
        assert "replicas" not in _one(core, "Deployment", name)["spec"], name
    sweeper = _one(core, "Deployment", "sweeper")["spec"]
    assert sweeper["replicas"] == 1 and sweeper["strategy"]["type"] == "Recreate"


def test_references_resolve(docs: list[dict[str, Any]]) -> None:
    """Every ConfigMap, Secret, key and volume a pod names exists, in the manifests or, for
    an optional file, in the `kubectl create secret` line its header gives."""
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}

    def keys(kind: str, name: str) -> set[str]:
        obj = objects[(kind, name)]
        return set(obj.get("data", {})) | set(obj.get("stringData", {}))

    documented = {}
    for path in K8S.glob("*.yaml"):
        for name, key in re.findall(
            r"create secret generic ([\w-]+) \\\n#\s+--from-literal=([\w-]+)=", path.read_text()
        ):
            documented[("Secret", name)] = {key}

    def assert_key(kind: str, name: str, key: str) -> None:
        if (kind, name) in objects:
            assert key in keys(kind, name), (kind, name, key)
        else:
            assert key in documented.get((kind, name), set()), (kind, name, key)

    for workload, template in _pod_specs(docs):
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes |= {
            claim["metadata"]["name"]: claim
            for claim in workload["spec"].get("volumeClaimTemplates", [])
        }
        for volume in volumes.values():
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in objects
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in objects
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in objects
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in objects
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert_key("Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                if "configMapKeyRef" in ref:
                    key_ref = ref["configMapKeyRef"]
                    assert_key("ConfigMap", key_ref["name"], key_ref["key"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (workload["metadata"]["name"], mount["name"])


def test_services_select_their_pods(docs: list[dict[str, Any]]) -> None:
    templates = {w["metadata"]["name"]: (w, t) for w, t in _pod_specs(docs)}
    for service in (doc for doc in docs if doc["kind"] == "Service"):
        selector = service["spec"]["selector"]
        selected = [
            name
            for name, (_, template) in templates.items()
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert selected == [service["metadata"]["name"]], (selector, selected)
        workload, template = templates[selected[0]]
        assert workload["spec"]["selector"]["matchLabels"].items() <= selector.items()
        ports = {
            port["name"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_api_probes(core: list[dict[str, Any]]) -> None:
    api = _visionq_workloads(core)["api"]
    args = parser().parse_args(api["args"])
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    env = {var["name"]: var.get("value") for var in api.get("env", [])}
    # The probes go to the health listener, which answers while every request thread is busy.
    assert ports == {"http": args.port, "health": int(env["VISIONQ_HEALTH_PORT"])}

    def probe(kind: str) -> str:
        get = api[kind]["httpGet"]
        assert ports.get(get["port"], get["port"]) == ports["health"], kind
        return get["path"]

    assert probe("startupProbe") == "/healthz"
    assert probe("livenessProbe") == "/healthz"
    assert probe("readinessProbe") == "/readyz"


def test_workers_metrics_and_liveness(core: list[dict[str, Any]]) -> None:
    pods = {w["metadata"]["name"]: t for w, t in _pod_specs(core)}
    for name, container in _visionq_workloads(core).items():
        role = parser().parse_args(container["args"]).command
        env = {var["name"]: var.get("value") for var in container.get("env", [])}
        if role in {"worker", "sweeper"}:
            command = " ".join(container["livenessProbe"]["exec"]["command"])
            assert "VISIONQ_REDIS_URL" in command and ".ping()" in command, name
        if role == "worker":
            assert env["VISIONQ_METRICS_PORT"] == "9100", name
            ready = container["readinessProbe"]["httpGet"]
            assert (ready["path"], ready["port"]) == ("/readyz", "metrics"), name
            assert {"name": "metrics", "containerPort": 9100} in container["ports"], name
            annotations = pods[name]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == env["VISIONQ_METRICS_PORT"], name
        if role in {"worker", "api"}:
            # A private, empty directory per pod for the multiprocess metric files.
            volumes = {v["name"]: v for v in pods[name]["spec"]["volumes"]}
            (mount,) = [
                m
                for m in container["volumeMounts"]
                if m["mountPath"] == env["PROMETHEUS_MULTIPROC_DIR"]
            ]
            assert "emptyDir" in volumes[mount["name"]], name


def test_grace_periods_match_compose(core: list[dict[str, Any]]) -> None:
    """Late acknowledgement: a stopped worker's running task goes back to the queue, so
    each gets the same time to finish as under docker-compose."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in ("worker-prepare", "worker-upstream", "worker-webhooks"):
        pod = _one(core, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == _seconds(
            compose[name]["stop_grace_period"]
        ), name


def test_pods_are_locked_down_and_sized(docs: list[dict[str, Any]]) -> None:
    for workload, template in _pod_specs(docs):
        name = workload["metadata"]["name"]
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = _quantity(resources["requests"][resource])
                assert 0 < request <= _quantity(resources["limits"][resource]), (name, resource)
            if container["image"].split(":")[0] == IMAGE:
                # Python and gunicorn need a writable /tmp on a read-only root.
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                assert any(mounts.get(v) == TMP for v in tmp_volumes), name


def test_configured_variables_are_read(
    core: list[dict[str, Any]], docs: list[dict[str, Any]]
) -> None:
    """A misspelt or retired variable would be silently ignored: every variable set is one
    that `Settings.from_env` or the named third-party library reads."""
    known = _settings_variables() | THIRD_PARTY_VARIABLES
    configured = set(_one(core, "ConfigMap", "visionq")["data"])
    configured |= set(_one(core, "Secret", "visionq")["stringData"])
    for _, container in _containers(docs):
        if container["image"].split(":")[0] == IMAGE:
            configured |= {var["name"] for var in container.get("env", [])}
    assert configured - known == set()


def test_secret_placeholders_fail_closed(core: list[dict[str, Any]]) -> None:
    """Deployed unedited, visionq refuses to start; with real values the settings hold."""
    config = _one(core, "ConfigMap", "visionq")["data"]
    secret = _one(core, "Secret", "visionq")["stringData"]
    assert set(secret.values()) == {"REPLACE_ME"}
    assert set(_one(core, "Secret", "visionq-redis")["stringData"].values()) == {"REPLACE_ME"}
    with pytest.raises(ConfigurationError):
        Settings.from_env(config | secret)

    assert set(SECRET_VALUES) == set(secret)
    settings = Settings.from_env(config | SECRET_VALUES)
    assert settings.storage_url.startswith("s3://")
    # A prepare child hits its address-space cap before its pod hits the memory limit, so
    # an oversized image fails its job rather than getting the pod killed.
    prepare = _visionq_workloads(core)["worker-prepare"]
    assert parser().parse_args(prepare["args"]).concurrency == [{"*": 1}]
    limit = _quantity(prepare["resources"]["limits"]["memory"])
    assert 0 < settings.prepare_memory_limit < limit


def test_commands_are_visionq_subcommands(docs: list[dict[str, Any]]) -> None:
    workloads = _visionq_workloads(docs)
    assert {parser().parse_args(c["args"]).command for c in workloads.values()} == {
        "api",
        "worker",
        "sweeper",
    }
    for name, container in workloads.items():
        args = parser().parse_args(container["args"])
        if args.command == "worker":
            assert name == f"worker-{args.queues}", name
    flower = _one(docs, "Deployment", "flower")["spec"]["template"]["spec"]["containers"][0]
    assert flower["command"] == ["celery"]
    assert flower["args"] == ["--broker=$(VISIONQ_REDIS_URL)", "flower", "--port=5555"]

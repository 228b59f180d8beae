"""deploy/k8s: every resource valid against its schema (Kubernetes' own, shipped inside
kubernetes-validate; CloudNativePG's, vendored), and the deployment is what docs/deploy.md
promises: every service and gateway with replicas, probes, limits, a locked-down
container, secrets from Secrets only, a disruption budget; NATS as cluster.conf says."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml

from deploy.nats import permissions
from gateway.api import PREFIX
from gateway.pages import ROOT as PAGES
from runtime.app import Service
from runtime.settings import ENV_PREFIX, Settings
from services.registry import SERVICES

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES = "1.32"  # the oldest Kubernetes the manifests are checked against
CRDS = {("postgresql.cnpg.io/v1", "Cluster"): "cluster-postgresql-v1.json",
        ("postgresql.cnpg.io/v1", "Database"): "database-postgresql-v1.json"}
NOT_RESOURCES = {"kustomization.yaml", "nats-values.yaml"}
Doc = dict[str, Any]


@cache
def resources() -> list[Doc]:
    """Every resource in the kustomization's files."""
    files = sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES)
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[Doc]:
    return [r for r in resources() if r["kind"] == kind]


def deployment(name: str) -> Doc:
    (found,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    return found


def pod(d: Doc) -> Doc:
    spec: Doc = d["spec"]["template"]["spec"]
    return spec


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def strict(schema: Any) -> Any:
    """A CRD schema that also refuses unknown fields (as the API server prunes them: a
    misspelt field would be dropped without a word)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("doc", resources(), ids=ident)
def test_each_resource_is_valid_against_its_schema(doc: Doc) -> None:
    crd = CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd is None:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        return
    schema = json.loads((K8S / "schemas" / crd).read_text())
    jsonschema.validate({k: v for k, v in doc.items() if k != "status"}, strict(schema))


def test_a_misspelt_field_is_caught() -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment("social"), "spce": {}}, KUBERNETES,
                                     strict=True)
    (cluster,) = of_kind("Cluster")
    schema = strict(json.loads((K8S / "schemas" / CRDS[("postgresql.cnpg.io/v1",
                                                        "Cluster")]).read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**cluster, "spec": {**cluster["spec"], "instance": 3}}, schema)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - NOT_RESOURCES
    assert set(kustomization["resources"]) == files
    assert [i["name"] for i in kustomization["images"]] == ["ledgershare"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_runs_under_its_own_user_and_is_probed_over_nats(
        service: Service) -> None:
    d = deployment(service.name)
    (main,) = pod(d)["containers"]
    assert main["command"] == ["python", "-m", service.module]
    env = env_of(main)
    assert env["LEDGERSHARE_NATS_URL"]["value"].startswith(f"tls://{service.name}:$(")
    assert env["LEDGERSHARE_NATS_INBOX_PREFIX"]["value"] == f"_INBOX_{service.name}"
    probe = ["python", "-m", "deploy.probe", service.name]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[kind]["exec"]["command"] == probe
    assert f"/{service.name}?" in env["LEDGERSHARE_PG_DSN"]["value"]  # its own database


@pytest.mark.parametrize("user", permissions.GATEWAYS)
def test_each_gateway_runs_under_its_audiences_user_behind_the_ingress(user: str) -> None:
    d = deployment(f"gateway-{user}")
    (main,) = pod(d)["containers"]
    assert main["command"] == ["python", "-m", "gateway"]
    assert env_of(main)["LEDGERSHARE_NATS_URL"]["value"].startswith(f"tls://{user}:$(")
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (ingress,) = of_kind("Ingress")
    routes = {p["path"]: p["backend"]["service"]["name"]
              for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert routes == {PREFIX.rsplit("/", 1)[0]: "gateway-desktop", PAGES: "gateway-wechat"}
    assert ingress["spec"]["tls"]


@pytest.mark.parametrize("d", of_kind("Deployment"), ids=ident)
def test_each_deployment_is_replicated_limited_and_locked_down(d: Doc) -> None:
    spec = pod(d)
    assert d["spec"]["replicas"] >= 2
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {
            "cpu", "memory"}, c["name"]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}, c["name"]
    for c in spec["containers"]:
        assert {"readinessProbe", "livenessProbe"} <= set(c), c["name"]
    budgets = [b for b in of_kind("PodDisruptionBudget")
               if b["spec"]["selector"]["matchLabels"].items()
               <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert len(budgets) == 1 and budgets[0]["spec"]["minAvailable"] == 1


SECRET_NAME = re.compile(r"PASSWORD|SECRET|PRIVATE|ACCESS_KEY|TOKEN")
CREDENTIALS_IN_URL = re.compile(r"://[^:/@]+:([^@]*)@")


@pytest.mark.parametrize("d", of_kind("Deployment"), ids=ident)
def test_secrets_come_from_secrets_only(d: Doc) -> None:
    for c in [*pod(d).get("initContainers", []), *pod(d)["containers"]]:
        from_secrets: set[str] = set()
        for e in c.get("env", []):
            if "valueFrom" in e:
                assert set(e["valueFrom"]) == {"secretKeyRef"}, e["name"]
                from_secrets.add(e["name"])
                continue
            assert not SECRET_NAME.search(e["name"]), f"{e['name']} is a literal"
            for password in CREDENTIALS_IN_URL.findall(e["value"]):
                # only a reference to a variable set (earlier) from a Secret
                assert re.fullmatch(r"\$\((\w+)\)", password), e["name"]
                assert password[2:-1] in from_secrets, e["name"]


def test_every_ledgershare_variable_is_a_setting() -> None:
    fields = {ENV_PREFIX + f.name.upper() for f in msgspec.structs.fields(Settings)}
    (config,) = of_kind("ConfigMap")
    names = set(config["data"]) | {e["name"] for d in of_kind("Deployment")
                                   for c in pod(d)["containers"] for e in c.get("env", [])}
    assert {n for n in names if n.startswith(ENV_PREFIX)} <= fields


def test_every_pod_may_reach_nats_and_only_services_postgres() -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind("NetworkPolicy")}
    to_nats = policies["nats-clients-and-routes"]["spec"]["ingress"][0]["from"][0]
    to_pg = policies["postgres-from-services-and-operator"]["spec"]["ingress"][0]["from"][0]
    for d in of_kind("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"].items()
        assert to_nats["podSelector"]["matchLabels"].items() <= labels
        reaches_pg = to_pg["podSelector"]["matchLabels"].items() <= labels
        assert reaches_pg == ("LEDGERSHARE_PG_DSN" in env_of(pod(d)["containers"][0]))


def test_the_nats_values_run_what_cluster_conf_says_with_the_generated_accounts() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    assert values["configMap"]["merge"]["data"]["accounts.conf"] == permissions.render(), (
        "run: python -m deploy.nats.permissions --values deploy/k8s/nats-values.yaml")
    assert config["merge"]["00$include"] == "accounts.conf"
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == 3
    assert config["cluster"]["tls"]["enabled"] and config["cluster"]["tls"]["merge"]["verify"]
    assert config["nats"]["tls"]["enabled"] and values["tlsCA"]["enabled"]
    assert config["jetstream"]["fileStore"]["enabled"]
    assert config["jetstream"]["merge"]["sync_interval"] == "always"
    passwords = {k: v["valueFrom"]["secretKeyRef"] for k, v in values["container"]["env"].items()}
    assert passwords == {u.password[1:]: {"name": "nats-users", "key": u.name}
                         for u in permissions.users()}
    assert values["natsBox"]["enabled"] is False


def test_the_services_and_nats_share_one_secret_of_passwords() -> None:
    users = {u.name for u in permissions.users()}
    for d in of_kind("Deployment"):
        ref = env_of(pod(d)["containers"][0])["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "nats-users" and ref["key"] in users

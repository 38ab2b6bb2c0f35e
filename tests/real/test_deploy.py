"""The deployment files, validated by the real tools, and the image's install steps run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from testbed.ports import free_port

from riskaudit import AuditConfig
from tests.helpers import ROOT, require

BIN = Path(sys.executable).parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
COMPOSE = [ROOT / "docker-compose.yml", ROOT / "docker-compose.prod.yml"]
ENV_FILES = [ROOT / ".env.dev", ROOT / ".env.prod"]
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def run(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, cwd=cwd, env=env
    )


def load_env_file(path: Path) -> dict[str, str]:
    """Docker's env_file format: KEY=VALUE per line, # comments, nothing quoted."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}:{n}: {line!r}"
        out[key] = value
    return out


def settings_in_code() -> set[str]:
    """Every variable name config.py reads (aliases included)."""
    text = (ROOT / "src" / "riskaudit" / "config.py").read_text()
    names = set(re.findall(r'"((?:RISK_AUDIT|AUDIT)_[A-Z0-9_]+|LOG_LEVEL)"', text))
    names |= {f"RISK_AUDIT_SLO_{p}" for p in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "ANALYTICS")}
    return names


# Second names of a setting: the files list the first name only.
ALIASES = {
    "AUDIT_FLUSH_INTERVAL",
    "RISK_AUDIT_LOG_LEVEL",
    "RISK_AUDIT_BACKUP_ENABLED",
    "RISK_AUDIT_BACKUP_INTERVAL",
    "AUDIT_BACKUP_TARGET",
    "AUDIT_BACKUP_S3_ENDPOINT",
    "AUDIT_BACKUP_OBJECT_LOCK",
}


def test_dockerfile_is_clean_under_hadolint() -> None:
    """hadolint at its default threshold finds nothing."""
    out = run(BIN / "hadolint", DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_keeps_the_agreed_shape() -> None:
    """Multi-stage, slim base, numeric non-root user, the log path, port, health, command."""
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.M)) == 2
    assert re.search(r"^USER 1000:1000$", text, re.M)
    assert "RISK_AUDIT_LOG_PATH=/var/log/riskaudit/risk_audit.jsonl" in text
    assert "install -d -o 1000 -g 1000 -m 0750 /var/log/riskaudit" in text
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert "HEALTHCHECK" in text and "/health" in text
    assert text.rstrip().endswith('CMD ["riskaudit", "serve"]')


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_pass_strict_validation(manifest: Path) -> None:
    """kubernetes-validate --strict accepts every manifest."""
    out = run(BIN / "kubernetes-validate", "--strict", "--quiet", manifest)
    assert out.returncode == 0, out.stdout + out.stderr


def k8s_docs() -> dict[str, dict]:  # type: ignore[type-arg]
    docs = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    """apply -k creates everything except the Secret, which is made from files."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["namespace"] == "trading"
    assert sorted(kust["resources"]) == sorted(
        p.name for p in MANIFESTS if p.name != "secret.example.yaml"
    )


def test_deployment_is_one_writer_locked_down_and_checked() -> None:
    """replicas 1 + Recreate, non-root read-only pod, probes, resources, init check."""
    docs = k8s_docs()
    dep = docs["Deployment/riskaudit"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"]
    (main,) = pod["containers"]
    sc = main["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert main["resources"] == {
        "requests": {"memory": "512Mi", "cpu": "500m"},
        "limits": {"memory": "2Gi", "cpu": "2"},
    }
    (init,) = pod["initContainers"]
    assert init["command"] == ["riskaudit", "check"]
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/run/secrets/riskaudit"]["readOnly"] is True
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"riskaudit-logs", "riskaudit-spool"}
    pvc = docs["PersistentVolumeClaim/riskaudit-logs"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteOnce"] and pvc["storageClassName"] == "fast-ssd"
    assert pvc["resources"]["requests"]["storage"] == "10Gi"
    assert "PodDisruptionBudget" not in {d["kind"] for d in docs.values()}


def test_configmap_settings_load_and_leave_kubernetes_variables_alone() -> None:
    """The ConfigMap's settings load with riskaudit's own loader, and it does not set
    KUBERNETES_SERVICE_HOST (the kubelet does)."""
    data = k8s_docs()["ConfigMap/riskaudit-config"]["data"]
    assert "KUBERNETES_SERVICE_HOST" not in data
    cfg = AuditConfig.from_env({**data, "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert cfg.in_kubernetes and cfg.require_persistent and cfg.backup.enabled
    assert cfg.min_free_bytes < 10 << 30  # fits the 10Gi volume, so the init check passes


def test_ingress_is_not_open_to_the_world() -> None:
    """An allow-list and client-certificate authentication, and TLS."""
    ing = k8s_docs()["Ingress/riskaudit"]
    notes = ing["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/whitelist-source-range"]
    assert notes["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "on"
    assert ing["spec"]["tls"]


@pytest.mark.parametrize("compose", COMPOSE, ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(compose: Path) -> None:
    """check-jsonschema with the vendored compose-spec schema accepts both files."""
    out = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", compose)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("compose", COMPOSE, ids=lambda p: p.name)
def test_docker_compose_config_accepts_the_files(compose: Path) -> None:
    """Debian's docker-compose (no engine needed for `config`) resolves each file."""
    require(shutil.which("docker-compose") is not None, "needs Debian's docker-compose")
    out = run("docker-compose", "-f", compose, "config", cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_production_compose_keeps_records_and_emergency_lines() -> None:
    """Named volumes bound to host directories (one mount per path), restart policy,
    json-file rotation 5 x 100m, the signing key as a read-only secret."""
    prod = yaml.safe_load(COMPOSE[1].read_text())
    svc = prod["services"]["riskaudit"]
    assert svc["restart"] == "unless-stopped"
    assert svc["logging"] == {
        "driver": "json-file",
        "options": {"max-size": "100m", "max-file": "5"},
    }
    targets = [v.split(":")[1] for v in svc["volumes"]]
    assert len(targets) == len(set(targets))
    assert {v.split(":")[0] for v in svc["volumes"]} == {"audit-logs", "audit-spool"}
    for vol in prod["volumes"].values():
        assert vol["driver_opts"]["o"] == "bind" and vol["driver_opts"]["device"].startswith("/")
    assert {s["source"] for s in svc["secrets"]} >= {"signing-key", "api-tokens"}
    dev = yaml.safe_load(COMPOSE[0].read_text())["services"]["riskaudit"]
    assert dev["volumes"] == ["./logs:/var/log/riskaudit"] and dev["env_file"] == ".env.dev"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_files_list_every_setting_and_load(env_file: Path) -> None:
    """Each .env file names every setting once and riskaudit's loader accepts it."""
    env = load_env_file(env_file)
    missing = settings_in_code() - ALIASES - set(env)
    assert not missing, f"{env_file.name} lacks {sorted(missing)}"
    cfg = AuditConfig.from_env(env)
    assert str(cfg.log_path) == "/var/log/riskaudit/risk_audit.jsonl"


def test_readme_documents_every_setting() -> None:
    """The README's settings table names every variable riskaudit reads."""
    readme = (ROOT / "README.md").read_text()
    missing = {n for n in settings_in_code() - ALIASES if f"`{n}`" not in readme}
    assert not missing, sorted(missing)


def test_prometheus_scrape_config_is_valid() -> None:
    """promtool check config accepts the scrape configuration (and its rules)."""
    require(shutil.which("promtool") is not None, "needs Debian's prometheus (promtool)")
    out = run("promtool", "check", "config", ROOT / "deploy" / "prometheus" / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_image_install_steps_work_as_a_non_root_user() -> None:
    """What the Dockerfile does, without an engine: build the wheel, install it into a
    fresh virtual environment as uid 1000, run `riskaudit serve` and get 200 on /health."""
    python = "/usr/bin/python3.11"
    require(os.path.exists(python), "needs Debian's python3.11 and python3.11-venv")
    require(os.geteuid() == 0, "needs root to act as uid 1000")
    # pytest's tmp directories are 0700 (root's): uid 1000 needs a path it can reach.
    tmp_path = Path(tempfile.mkdtemp(prefix="riskaudit-image-", dir="/var/tmp"))
    try:
        _install_and_serve(tmp_path, python)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _install_and_serve(tmp_path: Path, python: str) -> None:
    dist = tmp_path / "dist"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("riskaudit-*.whl")
    home = tmp_path / "home"
    for d in (home, home / "logs"):
        d.mkdir()
        os.chown(d, 1000, 1000)
    os.chmod(tmp_path, 0o755)
    os.chmod(dist, 0o755)
    as_user = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PIP_NO_CACHE_DIR": "1"}
    venv = home / "venv"
    made = run(*as_user, python, "-m", "venv", venv, env=env)
    assert made.returncode == 0, made.stderr
    installed = run(*as_user, venv / "bin" / "pip", "install", "--quiet", wheel, env=env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen(
        [
            *as_user,
            str(venv / "bin" / "riskaudit"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**env, "RISK_AUDIT_LOG_PATH": str(home / "logs" / "risk_audit.jsonl")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert (home / "logs" / "risk_audit.jsonl").stat().st_uid == 1000
    assert "Audit log file initialized" in out

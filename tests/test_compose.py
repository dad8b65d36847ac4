"""docker-compose.yml and the Dockerfile, checked by loading them (Docker cannot run here)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.test_env_example import example_variables

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

APP_SERVICES = ("web", "worker", "worker-interactive", "beat", "migrate", "mailcatcher")
LONG_RUNNING = ("web", "worker", "worker-interactive", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def command(service: dict) -> str:
    cmd = service["command"]
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def test_services_exist(services: dict) -> None:
    assert set(services) >= {*APP_SERVICES, "postgres", "redis"}
    assert services["postgres"]["image"].split(":")[1].startswith("15")
    assert services["redis"]["image"].split(":")[1].startswith("7")


def test_app_services_merge_the_one_anchor() -> None:
    # Compose the YAML without constructing it: an alias is the very node of its anchor, so
    # this proves each service merges `x-app: &app` rather than a copy of it.
    root = yaml.compose(COMPOSE.read_text())
    top = {key.value: value for key, value in root.value}
    anchor = top["x-app"]
    assert re.search(r"^x-app: &app$", COMPOSE.read_text(), re.MULTILINE)
    services = {key.value: value for key, value in top["services"].value}
    for name in APP_SERVICES:
        merges = [value for key, value in services[name].value if key.value == "<<"]
        assert merges and merges[0] is anchor, f"{name} must merge <<: *app"


def test_app_services_share_image_build_and_environment(compose: dict, services: dict) -> None:
    app = compose["x-app"]
    assert app["build"] and app["image"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == app["build"], name
        assert service["image"] == app["image"], name
        assert service["env_file"] == app["env_file"] == ".env.compose", name
        assert service["environment"] == app["environment"], name


def test_compose_runs_with_debug_off_on_its_own_env_file(compose: dict) -> None:
    """Issue 11, item 8: not the development .env (DEBUG on, private hosts allowed), and no
    secret committed: the example leaves both keys empty, and the real file is never
    committed nor copied into the image."""
    environment = compose["x-app"]["environment"]
    assert environment["DJANGO_DEBUG"] == "false"
    assert "SMTP_ALLOW_PRIVATE_HOSTS" not in environment
    example = ROOT / ".env.compose.example"
    values = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["DJANGO_SECRET_KEY"] == "" and values["FIELD_ENCRYPTION_KEYS"] == ""
    assert "DJANGO_DEBUG" not in values and "SMTP_ALLOW_PRIVATE_HOSTS" not in values
    assert set(values) <= example_variables(), "document them in .env.example"
    assert ".env.compose" in (ROOT / ".gitignore").read_text().split()
    assert ".env.compose" in (ROOT / ".dockerignore").read_text().split()
    assert ".env.compose.example" in COMPOSE.read_text()  # the file says how to make it


def test_commands(services: dict) -> None:
    assert command(services["web"]).startswith("gunicorn directo_mail.wsgi")
    assert command(services["worker"]).startswith("celery -A directo_mail worker")
    assert command(services["worker-interactive"]).startswith("celery -A directo_mail worker")
    assert command(services["beat"]).startswith("celery -A directo_mail beat")
    assert command(services["migrate"]).startswith("python manage.py migrate")
    catcher = "python manage.py mail_catcher --host 0.0.0.0 --port 1025"
    assert command(services["mailcatcher"]) == catcher


def test_each_lane_has_its_own_worker(services: dict) -> None:
    """Issue 13, item 4: the bulk lane and the interactive lane (CELERY_TASK_QUEUES) are each
    consumed by a worker of their own, so a test e-mail never waits behind a job."""
    from django.conf import settings

    lanes = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    consumed = {}
    for name in APP_SERVICES:
        if " worker" in command(services[name]):
            queues = re.search(r"(?:^| )-Q (\S+)", command(services[name]))
            assert queues, f"{name} must name its lane with -Q"
            consumed[name] = set(queues.group(1).split(","))
    assert consumed == {"worker": {"bulk"}, "worker-interactive": {"interactive"}}
    assert set().union(*consumed.values()) == lanes


def test_migrate_runs_once_before_the_app(services: dict) -> None:
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck to wait on"


def test_environment_points_at_the_compose_services(compose: dict, services: dict) -> None:
    environment = compose["x-app"]["environment"]
    assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert environment["EMAIL_URL"] == "smtp://mailcatcher:1025"
    database = urlsplit(environment["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.scheme == "postgres"
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"


def test_every_app_variable_is_in_env_example(compose: dict, services: dict) -> None:
    # The postgres service's POSTGRES_* belong to its image, not to directo_mail.
    documented = example_variables()
    for name in ("x-app", *APP_SERVICES):
        block = compose["x-app"] if name == "x-app" else services[name]
        environment = block.get("environment", {})
        if isinstance(environment, list):  # the `- NAME=value` form
            environment = dict(item.split("=", 1) for item in environment)
        undocumented = set(environment) - documented
        assert not undocumented, f"{name}: add to .env.example: {sorted(undocumented)}"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^RUN pip install -r \S*requirements\.txt", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert "collectstatic --noinput" in text
    # The build's throwaway keys are made in the RUN, never written into the image's ENV.
    assert not re.search(r"^ENV .*(SECRET_KEY|FIELD_ENCRYPTION_KEYS)", text, re.MULTILINE)
    assert "Fernet.generate_key()" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored, "keep secrets and the venv out of the image"

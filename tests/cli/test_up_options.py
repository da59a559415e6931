"""`blockrag up`'s flags become the platform's options: the defaults of blockrag.defaults and of
the config schema, and cache maintenance (its interval, or off). No platform is started: a
recording stand-in takes LocalPlatform's place."""

from __future__ import annotations

import signal

import pytest
from typer.testing import CliRunner

from blockrag import defaults
from blockrag.cli.app import app
from blockrag_services import platform as platform_module
from blockrag_services.config import PlatformConfig, ServiceResources


class RecordedPlatform:
    """LocalPlatform's verbs, recording the options it was given; starts nothing."""

    started: list = []

    def __init__(self, options):
        self.options = options
        RecordedPlatform.started.append(options)
        self.grpc_address = f"{options.host}:{options.grpc_port}"
        self.metrics_address = f"{options.host}:{options.metrics_port}"
        self.serve_grpc_port = options.internal_grpc_port

    def start(self, progress=lambda _: None) -> None:
        pass

    def wait(self) -> None:
        pass  # as if Ctrl-C came at once

    def drain(self, grace_s: float) -> int:
        return 0

    def stop(self) -> None:
        pass


@pytest.fixture
def up(monkeypatch, tmp_path):
    """Run `blockrag up ARGS` against the stand-in; the options it got (None: it did not start)."""
    monkeypatch.setenv("BLOCKRAG_HOME", str(tmp_path))
    monkeypatch.setattr(platform_module, "LocalPlatform", RecordedPlatform)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def run(*args: str):
        RecordedPlatform.started.clear()
        result = CliRunner().invoke(app, ["up", *args])
        return result, (RecordedPlatform.started[0] if RecordedPlatform.started else None)

    yield run
    for signum, handler in handlers.items():  # up installs its own
        signal.signal(signum, handler)


def test_the_defaults_are_the_one_sources(up):
    result, options = up()
    assert result.exit_code == 0, result.output
    assert (options.host, options.grpc_port, options.http_port, options.metrics_port) == (
        defaults.LOCAL_HOST, defaults.GRPC_PORT, defaults.HTTP_PORT, defaults.METRICS_PORT)
    assert options.config == PlatformConfig()  # every flag's default is the schema's
    assert options.config.cache_maintenance.interval_s == defaults.CACHE_MAINTENANCE_INTERVAL_S
    assert options.config.services == ServiceResources()  # each service's resources: the schema's
    assert f"gRPC: {defaults.ADDRESS}" in result.output.replace("\n", " ")


@pytest.mark.parametrize(("flag", "interval_s", "enabled"), [("60", 60.0, True), ("0.5", 0.5, True), ("0", 0.0, False)])
def test_cache_maintenance_interval_or_off(up, flag, interval_s, enabled):
    result, options = up("--cache-maintenance-interval", flag)
    assert result.exit_code == 0, result.output
    maintenance = options.config.cache_maintenance
    assert (maintenance.interval_s, maintenance.enabled) == (interval_s, enabled)
    # only the interval: the bounds and graces stay the schema's
    assert maintenance == type(maintenance)(interval_s=interval_s)


def test_a_negative_interval_is_refused_before_anything_starts(up):
    result, options = up("--cache-maintenance-interval", "-5")
    assert result.exit_code == 2 and options is None
    assert "--cache-maintenance-interval" in result.output


def test_the_help_shows_the_defaults(up):
    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "400"})  # rich: no wrapping
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--cache-maintenance-interval" in text and "0: off" in text
    for port in (defaults.GRPC_PORT, defaults.METRICS_PORT, defaults.HTTP_PORT):
        assert f"[default: {port}]" in text


def test_tls_flags_become_the_platforms_tls(up, tmp_path):
    from blockrag_services.server_tls import ServerTLS

    cert, key, ca = tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem"
    result, options = up("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca),
                         "--internal-grpc-port", "50099")
    assert result.exit_code == 0, result.output
    assert options.tls == ServerTLS(cert, key, ca) and options.internal_grpc_port == 50099
    assert up()[1].tls is None
    for args in (["--tls-cert", str(cert)], ["--tls-key", str(key)], ["--tls-client-ca", str(ca)]):
        result, options = up(*args)
        # raised before the platform is built; the CLI's entry (`run`) prints it as its error line
        assert options is None and result.exit_code != 0
        assert str(result.exception).startswith("TLS needs --tls-cert and --tls-key together"), result.exception


def test_replica_cache_bytes_sets_the_memory_tier_bound_alone(up):
    result, options = up("--replica-cache-bytes", str(32 << 20))
    assert result.exit_code == 0, result.output
    assert options.config == PlatformConfig(replica_cache_bytes=32 << 20)  # nothing else changes
    result, options = up("--replica-cache-bytes", "-1")
    assert result.exit_code == 2 and options is None

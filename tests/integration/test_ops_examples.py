"""The operator examples: the Prometheus scrape config and alert rules pass promtool's checks
and fire on the series they are about (promtool test rules); the systemd unit reloads with
SIGHUP, stops with SIGTERM and waits longer than the drain."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

from estcoap.runtime import DEFAULT_DRAIN_TIMEOUT
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "examples" / "prometheus"
UNIT = ROOT / "examples" / "systemd" / "estcoap.service"


def promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    tool = require("promtool", "checks the Prometheus examples (Debian package prometheus)")
    return subprocess.run(
        [str(tool), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_scrape_config_and_rules_pass_promtool() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout  # the rules file is loaded from the config
    done = promtool("check", "rules", "estcoap-rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_on_their_trouble_only() -> None:
    """The examples' own rule tests: each alert fires on its trouble, not on health."""
    done = promtool("test", "rules", "estcoap-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_systemd_unit_reloads_with_sighup_and_outlasts_the_drain() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert "--config" in service["ExecStart"] and " serve " in service["ExecStart"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > DEFAULT_DRAIN_TIMEOUT
    assert service["User"] != "root"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"]  # the CA directory, the only place written

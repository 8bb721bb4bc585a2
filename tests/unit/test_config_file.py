"""`--config FILE` (estcoap.config): keys derived from each command's options, the command
line over the file, one-line errors naming key and line, `config example` that loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from estcoap import config
from estcoap.cli import CONFIG_COMMANDS, build_parser, parse_args, subcommand
from estcoap.cli.gateway_cmd import upstream_credentials

CLI = [sys.executable, "-m", "estcoap.cli"]


def est(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    assert done.returncode == status, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_sets_options_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
ca = "/srv/ca"
https = ["127.0.0.1:8443", "[::1]:8443"]
trust_clients = ["maker-a.pem"]
max_body = 4096
require_pop = true
approval = "manual"
crl_next_update = "12h"
drain_timeout = 2.5
""",
    )
    args = parse_args(["serve", "--config", str(path)])
    assert args.ca == "/srv/ca"
    assert args.https == ["127.0.0.1:8443", "[::1]:8443"]
    assert args.max_body == 4096 and args.require_pop is True and args.approval == "manual"
    assert args.crl_next_update.total_seconds() == 12 * 3600  # through the option's own type
    assert args.drain_timeout == 2.5
    assert args.trust_clients == ["maker-a.pem"]

    args = parse_args(
        [
            "serve",
            "--config",
            str(path),
            "--max-body",
            "100",
            "--https",
            "127.0.0.1:9443",
            "--approval",
            "auto",
        ]
    )
    assert args.max_body == 100 and args.approval == "auto"
    assert args.https == ["127.0.0.1:9443"]  # a repeatable option replaces the file's array
    assert args.trust_clients == ["maker-a.pem"]  # not given: the file's
    # Without the file the defaults are the parser's.
    assert parse_args(["serve", "--ca", "x", "--https", "h:1"]).max_body != 4096


def test_required_options_may_come_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
coaps = "127.0.0.1:5684"
upstream = "https://est.example:8443/.well-known/est"
server_cert = "gw.pem"
server_key = "gw.key"
upstream_timeout = 3
""",
    )
    args = parse_args(["gateway", "--config", str(path)])
    assert args.coaps == "127.0.0.1:5684" and args.upstream_timeout == 3.0
    done = est("gateway", "--coaps", "127.0.0.1:0")  # without the file they are required
    assert done.returncode == 2 and "required" in done.stderr


@pytest.mark.parametrize(
    ("text", "line", "needles"),
    [
        ('ca = "x"\n\nmax_bdy = 4096\n', 3, ("unknown key 'max_bdy'", "did you mean 'max_body'")),
        ('ca = "x"\nmax_body = "lots"\n', 2, ("key 'max_body'", "expected a positive integer")),
        ("max_body = 0\n", 1, ("key 'max_body'", "expected a positive integer, got '0'")),
        ('# c\nhttps = "127.0.0.1:1"\n', 2, ("key 'https'", "expected an array")),
        ("require_pop = 1\n", 1, ("key 'require_pop'", "expected true or false")),
        ("ca = 5\n", 1, ("key 'ca'", "expected a string, got an integer")),
        ('approval = "sometimes"\n', 1, ("key 'approval'", "expected one of auto, manual")),
        ('\n[serve]\nca = "x"\n', 2, ("unknown key 'serve'",)),
        ('user = ["bob:secret"]\n', 1, ("'user' would put a password", "users_file")),
    ],
)
def test_a_wrong_key_or_value_is_one_line_naming_key_and_line(
    tmp_path: Path, text: str, line: int, needles: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)
    said = one_line(est("serve", "--config", path, "--https", "127.0.0.1:0"), 2, *needles)
    assert said.startswith(f"estcoap serve: --config {path}:{line}: "), said
    assert "secret" not in said  # a refused password is not echoed


def test_a_file_that_is_not_toml_or_missing_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ca = \n")
    one_line(est("serve", "--config", path), 2, str(path), "not valid TOML", "line 1")
    one_line(est("proxy", "--config", tmp_path / "nope.toml"), 2, "nope.toml", "No such file")


def test_every_option_of_every_command_has_a_key() -> None:
    parser = build_parser()
    for command in CONFIG_COMMANDS:
        sub = subcommand(parser, command)
        keys = config.options(sub)
        for action in sub._actions:
            if (
                action.option_strings
                and action.help != "==SUPPRESS=="
                and action.dest not in ("help", "config")
            ):
                assert any(a is action for a in keys.values()), (command, action.option_strings)
        assert "config" not in keys and "help" not in keys


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_config_example_loads_as_it_is(tmp_path: Path, command: str) -> None:
    done = est("config", "example", command)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    sub = subcommand(build_parser(), command)
    keys = config.options(sub)
    for key in keys:
        if key not in config.SECRET_KEYS:
            assert f"{key} = " in text, key  # every key, set or commented out
    path = write(tmp_path, text)
    values = config.load(path, sub)
    # The values it sets are the defaults, so loading it changes nothing.
    for action in sub._actions:
        if action.dest in values:
            default = action.default
            if isinstance(default, str) and action.type is not None:
                default = action.type(default)  # type: ignore[operator]
            assert values[action.dest] == default, action.dest
    assert "# --max-body" in text or command != "serve"


def test_upstream_password_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = write(tmp_path, "ra-user:s3cret-pw\n", "upstream.secret")
    path = write(
        tmp_path,
        f"""
coaps = "127.0.0.1:0"
upstream = "https://127.0.0.1:1/.well-known/est"
server_cert = "gw.pem"
server_key = "gw.key"
upstream_user_file = "{secret}"
""",
    )
    monkeypatch.delenv("ESTCOAP_UPSTREAM_USER", raising=False)
    args = parse_args(["gateway", "--config", str(path)])
    assert upstream_credentials(args) == ("ra-user", "s3cret-pw")
    assert "s3cret" not in path.read_text()  # the committed file holds no password

    write(tmp_path, "no colon here\n", "upstream.secret")
    done = est("gateway", "--config", path)
    line = one_line(done, 1, "upstream.secret", "expects NAME:PASSWORD")
    assert "no colon" not in line

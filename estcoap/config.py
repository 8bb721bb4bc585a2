"""`--config FILE`: a TOML file whose keys are a command's options, as argparse defaults.

The keys are not listed anywhere: they are derived from the command's parser, so an option
added to serve, gateway, proxy or simulate has its key at once. Option `--max-body` is key
`max_body`; a repeatable option takes an array; a flag (`--require-pop`) a boolean. A
value goes through the option's own type and choices, so the file is checked as strictly
as the command line, and the command line wins over the file.

Errors are one line naming the file, the line (tomllib gives none for a key, so the key's
line is found by a scan of the text) and the key: ConfigError, which the CLI reports with
exit status 2, as a wrong command line.

Passwords have no key: `user` and `upstream_user` would put them in a file that is meant
to be committed; `users_file` and `upstream_user_file` name files that hold them instead.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Options whose value holds a password: refused in a file, with the key to use instead.
SECRET_KEYS = {"user": "users_file", "upstream_user": "upstream_user_file"}
# Options that are not settings: --config itself, --help.
_NOT_KEYS = {"config", "help"}


class ConfigError(ValueError):
    """A config file that cannot be used; str() is one line."""


def key_of(action: argparse.Action) -> str | None:
    """The TOML key of an option (its first long spelling), or None for what has no key."""
    if not action.option_strings or action.help is argparse.SUPPRESS:
        return None  # positional arguments and hidden aliases
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs:
        return None
    key = longs[0][2:].replace("-", "_")
    return None if key in _NOT_KEYS else key


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every key of a command, in the order --help lists the options."""
    found = {}
    for action in parser._actions:
        key = key_of(action)
        if key is not None:
            found[key] = action
    return found


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0  # store_true / store_false


def _is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def key_line(text: str, key: str) -> int | None:
    """The line (1-based) where `key` is set at the top level of a TOML text, or opens a
    table `[key]`; None when the scan does not find it (e.g. a dotted key)."""
    assignment = re.compile(
        rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*="""
    )
    table = re.compile(rf"^\s*\[+\s*{re.escape(key)}\s*[\].]")
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        if table.match(line):
            return number
        if re.match(r"^\s*\[", line):
            in_table = True
        elif not in_table and assignment.match(line):
            return number
    return None


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """A TOML value as the option's value, checked by its type and choices."""
    if _is_flag(action):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value if action.const is True else not value
    if _is_list(action):
        if not isinstance(value, list):
            raise ValueError(f"expected an array, e.g. {key} = [{_example_item(action)}]")
        return [_scalar(action, item) for item in value]
    return _scalar(action, value)


def _scalar(action: argparse.Action, value: Any) -> Any:
    if action.type is None:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_toml_type(value)}")
        converted: Any = value
    else:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a string or a number, got {_toml_type(value)}")
        try:
            converted = action.type(str(value))  # type: ignore[operator]
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ValueError(str(exc) or f"invalid value {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"expected one of {choices}, got {value!r}")
    return converted


def _toml_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def load(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings as {dest: value} for parser; ConfigError names what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML file (not UTF-8 text)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settings(data, parser, text, str(path))


def settings(
    data: Mapping[str, Any], parser: argparse.ArgumentParser, text: str = "", source: str = ""
) -> dict[str, Any]:
    known = options(parser)
    found: dict[str, Any] = {}
    for key, value in data.items():
        line = key_line(text, key)
        where = f"{source}:{line}" if line else source
        if key in SECRET_KEYS and key in known:
            raise ConfigError(
                f"{where}: key {key!r} would put a password in the file; use "
                f"{SECRET_KEYS[key]!r} (a file that holds it) instead"
            )
        action = known.get(key)
        if action is None:
            raise ConfigError(
                f"{where}: unknown key {key!r} for '{parser.prog}'{_hint(key, known)}"
            )
        try:
            found[action.dest] = _convert(action, key, value)
        except ValueError as exc:
            raise ConfigError(f"{where}: key {key!r}: {exc}") from None
    return found


def _hint(key: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- applying a file before the command line --------------------------------------


def find_config(argv: list[str], commands: Iterable[str]) -> tuple[str, str] | None:
    """(command, FILE) when argv runs one of commands with --config FILE."""
    if not argv or argv[0] not in commands:
        return None
    rest = argv[1:]
    for i, token in enumerate(rest):
        if token == "--":
            break
        if token == "--config" and i + 1 < len(rest):
            return argv[0], rest[i + 1]
        if token.startswith("--config="):
            return argv[0], token.split("=", 1)[1]
    return None


def apply(parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Make the file's values the parser's defaults (a required option given in the file is
    no longer required). Returns the repeatable options' file values, for replaced_lists."""
    lists: dict[str, list[Any]] = {}
    for action in parser._actions:
        if action.dest in values:
            action.default = values[action.dest]
            action.required = False
            if _is_list(action):
                lists[action.dest] = list(values[action.dest])
    return lists


def replaced_lists(args: argparse.Namespace, lists: Mapping[str, list[Any]]) -> None:
    """A repeatable option given on the command line replaces the file's array: argparse
    appends to its default, so drop the file's items in front of the command line's."""
    for dest, from_file in lists.items():
        value = getattr(args, dest, None)
        if isinstance(value, list) and len(value) > len(from_file):
            setattr(args, dest, value[len(from_file) :])


# ---- estcoap config example COMMAND ------------------------------------------------


def example(parser: argparse.ArgumentParser, command: str) -> str:
    """A commented TOML file with every key of the command: its help, then the key set to
    its default, or commented out when it has none. It loads as it is."""
    formatter = parser._get_formatter()
    lines = [
        f"# estcoap {command} --config FILE: every key is an option of 'estcoap {command}'",
        "# (--max-body is max_body; a repeatable option takes an array). An option given on",
        "# the command line overrides the file. Passwords have no key: users_file and",
        "# upstream_user_file name files that hold them, so this file can be committed.",
        "",
    ]
    for key, action in options(parser).items():
        if key in SECRET_KEYS:
            continue
        help_text = formatter._expand_help(action) if action.help else ""
        help_text = re.sub(r"\s*\(default: [^)]*\)$", "", help_text)
        if action.required:
            help_text += " (required)"
        if action.choices is not None and not _is_flag(action):
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        for chunk in _wrap(f"--{key.replace('_', '-')}: {help_text}", 86):
            lines.append(f"# {chunk}")
        default = action.default
        if _is_flag(action):
            lines.append(f"{key} = {_toml(bool(default))}")
        elif default not in (None, [], argparse.SUPPRESS):
            lines.append(f"{key} = {_toml(default)}")
        elif _is_list(action):
            lines.append(f"# {key} = [{_example_item(action)}]")
        else:
            lines.append(f"# {key} = {json.dumps(action.metavar or key.upper())}")
        lines.append("")
    return "\n".join(lines)


def _example_item(action: argparse.Action) -> str:
    return json.dumps(str(action.metavar or "VALUE"))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # JSON string escapes are valid in TOML basic strings


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]

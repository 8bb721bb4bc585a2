"""One home for object identifiers: estcoap/codec/oids.py, and nowhere else in the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from cryptography.x509.oid import ObjectIdentifier

from estcoap.codec import der, oids

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "estcoap" / "codec" / "oids.py"
# A dotted OID: first arc 0-2, at least four arcs (so "127.0.0.1" or a version is not one).
DOTTED = re.compile(r"[012]\.(0|[1-9]\d*)(\.(0|[1-9]\d*)){2,}")


def _package_sources() -> list[Path]:
    files = list((ROOT / "estcoap").rglob("*.py"))  # estcoap.gateway included
    return sorted(path for path in files if path != HOME)


def _oid_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are a dotted OID, and ObjectIdentifier(...) of any literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if DOTTED.fullmatch(node.value):
                found.append((node.lineno, node.value))
        elif isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "ObjectIdentifier" and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, repr(node.args[0].value)))
    return found


def test_the_scan_finds_an_oid_literal() -> None:
    source = 'A = "1.2.840.113549.1.7.2"\nB = x509.ObjectIdentifier("2.5.4.3")\nC = "127.0.0.1"\n'
    assert [line for line, _ in _oid_literals(ast.parse(source))] == [1, 2, 2]


def test_no_oid_literal_outside_oids_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in _package_sources()
        for line, text in _oid_literals(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], "declare these in estcoap/codec/oids.py:\n" + "\n".join(offenders)


def test_der_forms_encode_their_dotted_forms() -> None:
    assert oids.ID_SIGNED_DATA_DER == bytes.fromhex("06092a864886f70d010702")  # RFC 5652 s5.1
    assert oids.ID_DATA_DER == der.oid(oids.ID_DATA)
    assert der.decode_oid(der.read_one(oids.ID_SIGNED_DATA_DER)) == oids.ID_SIGNED_DATA


def test_every_dotted_constant_is_a_valid_oid() -> None:
    values: list[object] = []
    for name in dir(oids):
        value = getattr(oids, name)
        if name.isupper():
            values.extend(value.values() if isinstance(value, dict) else [value])
    dotted = [v.dotted_string if isinstance(v, ObjectIdentifier) else v for v in values]
    strings = [v for v in dotted if isinstance(v, str)]
    assert len(strings) > 40
    for value in strings:
        assert DOTTED.fullmatch(value), value
        assert der.decode_oid(der.read_one(der.oid(value))) == value

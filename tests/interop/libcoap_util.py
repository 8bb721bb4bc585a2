"""Drive libcoap's coap-client-openssl (4.3.1) and openssl's CLI as independent EST-coaps peers.

How libcoap 4.3.1 reports a response (measured here): at the default verbosity a 4.xx/5.xx
code and its diagnostic go to stderr as "4.04 <payload>", success codes print nothing, and the
exit status is 0 either way. With `-v 7` every PDU sent and received is logged on stdout as
"v:1 t:ACK c:2.05 i:8419 {01} [ Content-Format:281, Block2:0/M/64 ] :: binary data length 64",
so codes and options (Max-Age, Size1, Block1/2, Content-Format) are read from those lines.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

COAP_CLIENT = shutil.which("coap-client-openssl")
OPENSSL = shutil.which("openssl")

_PDU = re.compile(
    r"^v:1 t:(?P<type>CON|NON|ACK|RST) c:(?P<code>[0-9A-Z.]+) i:(?P<mid>[0-9a-f]+) \{[0-9a-f]*\}"
    r" \[ ?(?P<options>.*?) ?\](?: :: (?P<payload>.*))?$"
)


@dataclass(frozen=True)
class Pdu:
    """One CoAP message as libcoap logged it."""

    type: str
    message_id: str
    code: str  # "GET", "POST", ... for requests; "2.05", "4.04", ... for responses
    options: tuple[tuple[str, str], ...]
    payload_note: str  # "'diagnostic text'" or "binary data length N" or ""

    @property
    def is_response(self) -> bool:
        return self.code[:1].isdigit()

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


def parse_pdus(log: str) -> list[Pdu]:
    pdus = []
    for line in log.splitlines():
        match = _PDU.match(line)
        if match is None:
            continue
        options = tuple(
            tuple(item.split(":", 1)) for item in match["options"].split(", ") if ":" in item
        )
        pdus.append(
            Pdu(match["type"], match["mid"], match["code"], options, match["payload"] or "")
        )  # type: ignore[arg-type]
    return pdus


@dataclass
class Exchange:
    """What one coap-client run did: every PDU both ways, and what it printed."""

    returncode: int
    stdout: str
    stderr: str
    pdus: list[Pdu] = field(default_factory=list)

    # At -v 7 libcoap also logs the application's view of a block-wise exchange under an
    # on-wire message ID: the whole request before the first block goes out, and the
    # reassembled response after the last block came in. One PDU per message ID (the one
    # that was on the wire; a retransmission repeats it) leaves exactly what was sent.

    @property
    def requests(self) -> list[Pdu]:
        wire: dict[str, Pdu] = {}
        for pdu in self.pdus:
            if not pdu.is_response:
                wire[pdu.message_id] = pdu  # the wire copy is logged after the app's view
        return list(wire.values())

    @property
    def responses(self) -> list[Pdu]:
        wire: dict[str, Pdu] = {}
        for pdu in self.pdus:
            if pdu.is_response and pdu.code != "0.00":
                wire.setdefault(pdu.message_id, pdu)  # the app's copy is logged afterwards
        return list(wire.values())

    @property
    def final(self) -> Pdu:
        """The last response: the one that ends the (possibly block-wise) exchange."""
        if not self.responses:
            raise AssertionError(
                f"no CoAP response\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return self.responses[-1]

    @property
    def code(self) -> str:
        return self.final.code

    def describe(self) -> str:
        return f"rc={self.returncode} code={self.code}\nstderr: {self.stderr.strip()}"


async def run_tool(*argv: str | Path, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def coap_client(
    url: str, cert: Path, key: Path, trust: Path, *args: str | Path, timeout: float = 20
) -> Exchange:
    """One coap-client-openssl run with a certificate identity; `args` are extra flags."""
    assert COAP_CLIENT is not None
    rc, out, err = await run_tool(
        COAP_CLIENT,
        "-v",
        "7",
        "-B",
        "10",
        "-c",
        cert,
        "-j",
        key,
        "-R",
        trust,
        *args,
        url,
        timeout=timeout,
    )
    return Exchange(rc, out, err, parse_pdus(out))


async def coap_client_psk(
    url: str, identity: str, key: str, *args: str | Path, timeout: float = 20
) -> Exchange:
    """One coap-client-openssl run with a pre-shared key (libcoap 4.3.1 takes -k as text)."""
    assert COAP_CLIENT is not None
    rc, out, err = await run_tool(
        COAP_CLIENT,
        "-v",
        "7",
        "-B",
        "10",
        "-u",
        identity,
        "-k",
        key,
        *args,
        url,
        timeout=timeout,
    )
    return Exchange(rc, out, err, parse_pdus(out))


async def openssl_csr(
    directory: Path,
    stem: str,
    subject: str,
    *,
    key: Path | None = None,
    challenge_password: str | None = None,
) -> tuple[Path, Path]:
    """A DER PKCS#10 made by `openssl req` with a fresh EC P-256 key (or `key`).

    subject is in openssl's form, e.g. "/CN=dev/O=Example". Returns (csr_der, key_pem).
    """
    assert OPENSSL is not None
    csr_path = directory / f"{stem}.csr.der"
    key_path = key or directory / f"{stem}.key"
    argv: list[str | Path] = [OPENSSL, "req", "-new", "-outform", "DER", "-out", csr_path]
    if key is None:
        argv += [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key_path,
        ]
    else:
        argv += ["-key", key]
    if challenge_password is None:
        argv += ["-subj", subject]
    else:
        # challengePassword is an attribute, not an extension: only a config file sets it.
        config = directory / f"{stem}.cnf"
        rdns = [part.split("=", 1) for part in subject.strip("/").split("/")]
        config.write_text(
            "[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n[dn]\n"
            + "".join(f"{name} = {value}\n" for name, value in rdns)
            + f"[attrs]\nchallengePassword = {challenge_password}\n"
        )
        argv += ["-config", config]
    rc, out, err = await run_tool(*argv)
    if rc != 0:
        raise RuntimeError(f"openssl req failed: {err}")
    return csr_path, key_path

"""Test certificates made with the openssl command line (no private key is
committed): a CA, a broker certificate for 127.0.0.1-3/localhost, client
certificates, and PEM keystores as Kafka's KIP-651 reads them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: apt-get install openssl", pytrace=False)
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def ca(cwd: Path, name: str) -> None:
    """A self-signed CA: `name`.key and `name`.pem."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=cwd)


def signed(cwd: Path, name: str, subject: str, ca: str, san: str | None = None) -> None:
    """`name`.key and `name`.pem (an X.509 v3 certificate: for a broker, as
    server and client, with `san`; else for a client), signed by the CA
    files `ca`.key/`ca`.pem."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", subject, cwd=cwd)
    # A broker's certificate serves as its client certificate too, towards
    # the other brokers.
    usage = f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}" if san else "extendedKeyUsage=clientAuth"
    (cwd / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\n{usage}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


def broker_keystore(cwd: Path) -> Path:
    """In `cwd`: ca.pem, and keystore.pem (the broker's key and certificate
    for 127.0.0.1-3 and localhost in one file, as `ssl.keystore.location`
    of type PEM takes it). Returns `cwd`."""
    cwd.mkdir(parents=True, exist_ok=True)
    ca(cwd, "ca")
    signed(cwd, "server", "/CN=localhost", "ca", san="IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost")
    (cwd / "keystore.pem").write_text((cwd / "server.key").read_text() + (cwd / "server.pem").read_text())
    return cwd

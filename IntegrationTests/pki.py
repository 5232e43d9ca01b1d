"""Certificates for the TLS tests, made with `openssl`: a test CA signing the servers' and
clients' certificates, and an unrelated CA whose certificates nobody trusts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()


class PKI:
    """A test CA with the broker's and clients' certificates, and an unrelated CA."""

    def __init__(self, root: Path):
        self.root = root
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", f"{ca}.key",
                    "-out", f"{ca}.pem", "-subj", f"/CN={ca}", cwd=root)
        (root / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        self.issue("broker", "localhost", "ca", san=True)
        self.issue("alice", "alice", "ca")
        self.issue("admin", "admin", "ca")
        self.issue("mallory", "admin", "other-ca")  # claims a super-user's name, from a CA nobody trusts
        self.ca = root / "ca.pem"
        self.other_ca = root / "other-ca.pem"

    def issue(self, name: str, cn: str, ca: str, san: bool = False, out: str | None = None) -> None:
        out = out or name
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{out}.key", "-out", f"{out}.csr",
                "-subj", f"/CN={cn}", cwd=self.root)
        extra = ["-extfile", "san.cnf"] if san else []
        openssl("x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-days", "2", "-out", f"{out}.pem", *extra, cwd=self.root)

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


def make_pki(root: Path) -> PKI:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS tests (apt-get install openssl)")
    return PKI(root)

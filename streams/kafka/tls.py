"""Credentials for the local dev broker's SASL_SSL listener, made for one run: a CA, a broker
certificate it signed (for 127.0.0.1 and localhost) in a PKCS12 keystore, and SCRAM users.

Made with the JDK's ``keytool`` (it comes with the Java the broker needs), nothing else.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from streams.kafka.jars import BrokerError

_SAN = "SAN=dns:localhost,ip:127.0.0.1"


@dataclass(frozen=True)
class BrokerSecurity:
    """What a SASL_SSL local broker serves, and what a client needs to reach it."""

    ca_file: Path  # PEM: the client's IPR_KAFKA_SSL_CAFILE
    keystore: Path  # PKCS12: the broker's certificate and key
    store_password: str
    users: dict[str, str] = field(default_factory=dict)  # SCRAM users: name -> password

    def client_env(self, bootstrap: str, user: str, mechanism: str = "SCRAM-SHA-256") -> dict:
        """The IPR_KAFKA_* variables of a client of this broker, as ``user``."""
        return {
            "IPR_KAFKA_BOOTSTRAP": bootstrap,
            "IPR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "IPR_KAFKA_SASL_MECHANISM": mechanism,
            "IPR_KAFKA_SASL_USERNAME": user,
            "IPR_KAFKA_SASL_PASSWORD": self.users[user],
            "IPR_KAFKA_SSL_CAFILE": str(self.ca_file),
        }


def make_security(folder: Path, users: tuple[str, ...] = ("ipr",)) -> BrokerSecurity:
    """A CA and a broker keystore in ``folder``, and a random password for each SCRAM user."""
    keytool = shutil.which("keytool")
    if keytool is None:
        raise BrokerError("`keytool` (it comes with Java 17+) is needed for a SASL_SSL broker")
    folder.mkdir(parents=True, exist_ok=True)
    pw = secrets.token_hex(12)
    ca, broker = folder / "ca.p12", folder / "broker.p12"
    ca_pem, csr, signed = folder / "ca.pem", folder / "broker.csr", folder / "broker.pem"

    def run(*args: str) -> None:
        done = subprocess.run([keytool, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(f"keytool {args[0]} failed: {(done.stdout + done.stderr)[-1000:]}")

    store = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw]
    run("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
        "-dname", "CN=ipr-router local test CA", "-ext", "bc:c", "-keystore", str(ca), *store)
    run("-exportcert", "-alias", "ca", "-rfc", "-file", str(ca_pem), "-keystore", str(ca),
        "-storepass", pw)
    run("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity",
        "2", "-dname", "CN=localhost", "-ext", _SAN, "-keystore", str(broker), *store)
    run("-certreq", "-alias", "broker", "-file", str(csr), "-keystore", str(broker),
        "-storepass", pw)
    run("-gencert", "-alias", "ca", "-infile", str(csr), "-outfile", str(signed), "-rfc",
        "-validity", "2", "-ext", _SAN, "-keystore", str(ca), "-storepass", pw)
    run("-importcert", "-alias", "ca", "-file", str(ca_pem), "-noprompt", "-keystore",
        str(broker), "-storepass", pw)
    run("-importcert", "-alias", "broker", "-file", str(signed), "-keystore", str(broker),
        "-storepass", pw)
    return BrokerSecurity(ca_pem, broker, pw, {u: secrets.token_hex(12) for u in users})


def listener_properties(sec: BrokerSecurity, listener: str = "client") -> dict[str, str]:
    """server.properties entries for a SASL_SSL listener named ``listener``: SCRAM-SHA-256,
    SCRAM-SHA-512 and PLAIN, with the run's users."""
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in sec.users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    prefix = f"listener.name.{listener}"
    return {
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        f"{prefix}.scram-sha-256.sasl.jaas.config": scram,
        f"{prefix}.scram-sha-512.sasl.jaas.config": scram,
        f"{prefix}.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        f"{prefix}.ssl.keystore.type": "PKCS12",
        f"{prefix}.ssl.keystore.location": str(sec.keystore),
        f"{prefix}.ssl.keystore.password": sec.store_password,
        f"{prefix}.ssl.key.password": sec.store_password,
    }


def scram_format_args(sec: BrokerSecurity) -> list[str]:
    """StorageTool ``format`` arguments that create the SCRAM users (KRaft keeps them in its
    metadata log, so they exist from the first start)."""
    out: list[str] = []
    for user, password in sec.users.items():
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            out += ["--add-scram", f"{mech}=[name={user},password={password}]"]
    return out

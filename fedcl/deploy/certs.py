"""A throwaway certificate authority, one server certificate and the hospitals' node keys.

Flower's TLS needs a CA certificate (every client verifies with it) and a server
certificate + key for each daemon that listens (SuperLink, SuperNodes). One server
certificate with every service name as a subject alternative name serves them all;
for production, issue one per host from your institution's CA instead.

SuperNode authentication needs a key pair per hospital (:func:`write_node_keys`): the
SuperNode signs its requests with the private key, which never leaves the hospital;
the consortium registers the public key with the SuperLink (``flwr supernode
register``), which then accepts no other SuperNode.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedcl.deploy.topology import Tls, node_key, public_key


def write_node_keys(directory: Path, hospitals: int) -> list[Path]:
    """Write a SuperNode key pair per hospital; return the public keys' paths.

    ``directory/supernode-H`` (the private key, OpenSSH format, mode 0600: what
    ``flower-supernode --auth-supernode-private-key`` reads) and ``supernode-H.pub``
    (the public key, OpenSSH format: what ``flwr supernode register`` reads), on
    NIST P-384 as Flower's guide uses.
    """
    # imported only to write keys: cryptography loads slowly
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    public_keys = []
    for hospital in range(hospitals):
        key = ec.generate_private_key(ec.SECP384R1())
        private = directory / node_key(hospital)
        private.unlink(missing_ok=True)  # a new key, never an old file's mode
        private.touch(mode=0o600)
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        public = public_key(directory, hospital)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
        )
        public_keys.append(public)
    return public_keys


def write_certificates(directory: Path, names: Iterable[str], days: int = 30) -> Tls:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` to ``directory``.

    Parameters
    ----------
    directory
        Created if missing; the key is written with mode 0600.
    names
        DNS names the server certificate is valid for (``localhost`` and 127.0.0.1
        are always added).
    days
        Validity of both certificates.
    """
    # imported only to write certificates: cryptography loads slowly
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcl throwaway CA")])
    basic = x509.BasicConstraints(ca=True, path_length=0)
    ca = _signed(ca_name, ca_name, ca_key.public_key(), ca_key, valid, [(basic, True)])

    key = ec.generate_private_key(ec.SECP256R1())
    dns = sorted({"localhost", *names})
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])])
    extensions = [
        (x509.SubjectAlternativeName(alt_names), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
    ]
    server = _signed(subject, ca_name, key.public_key(), ca_key, valid, extensions)

    tls = Tls(
        ca=str(directory / "ca.pem"),
        cert=str(directory / "server.pem"),
        key=str(directory / "server.key"),
    )
    Path(tls.ca).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(tls.cert).write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path = Path(tls.key)
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


def _signed(
    subject: Any,
    issuer: Any,
    public_key: Any,
    signer: Any,
    valid: tuple[datetime.datetime, datetime.datetime],
    extensions: Sequence[tuple[Any, bool]],
) -> Any:
    """Return a certificate for ``subject``'s ``public_key``, signed by ``signer``.

    ``extensions``: (extension, critical) pairs, in order.
    """
    # imported only to write certificates: cryptography loads slowly
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())

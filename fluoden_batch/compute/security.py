"""TLS for the Dask cluster: encrypted, mutually authenticated client/scheduler/worker traffic.

``make_security(tls)`` turns the ``--tls`` option into a :class:`distributed.security.Security`:

- ``None`` or ``False``: no TLS (plain ``tcp://``; keep the scheduler on 127.0.0.1).
- ``True``: temporary self-signed certificates held in memory (``Security.temporary()``),
  for a local cluster started by this process. A client that does not hold them, or that
  speaks plain TCP, is refused.
- a directory: three PEM files shared by every endpoint (client, scheduler, workers):

  ========== ==============================================================
  ``ca.pem``  the certificate authority that signed ``cert.pem``
  ``cert.pem`` the certificate each endpoint presents
  ``key.pem``  the private key of ``cert.pem`` (keep it ``chmod 600``)
  ========== ==============================================================

  On a cluster the directory must be readable at the same path on the login node and the
  compute nodes (a shared file system). ``python -m fluoden_batch.compute.security DIR`` writes a
  self-signed set (valid one year) for a site without its own CA.

The Bokeh dashboard is not covered by these certificates: it stays plain HTTP, bound to
127.0.0.1; reach it through an SSH tunnel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from distributed.security import Security

from fluoden_batch.errors import FluodenError

CERT_FILES = {"ca": "ca.pem", "cert": "cert.pem", "key": "key.pem"}
"""File names looked up in a TLS certificate directory."""


class SecurityError(FluodenError):
    """TLS was requested but the certificates are missing, unreadable or invalid."""


def make_security(tls: bool | Path | str | None) -> Security | None:
    """The :class:`~distributed.security.Security` for ``--tls``, or ``None`` without TLS.

    Raises
    ------
    SecurityError
        ``cryptography`` is missing (``tls=True``), or the directory lacks one of
        ``ca.pem``, ``cert.pem``, ``key.pem``, or they do not form a usable key pair.
    """
    if tls is None or tls is False:
        return None
    if tls is True:
        try:
            return Security.temporary()
        except ImportError as exc:
            raise SecurityError(
                "--tls with temporary certificates needs the 'cryptography' package "
                "(pip install cryptography), or pass a directory with ca.pem, cert.pem, key.pem"
            ) from exc
    return _from_directory(Path(tls))


def _from_directory(folder: Path) -> Security:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise SecurityError(
            f"TLS certificate directory {folder} does not exist (expected a directory "
            f"holding {', '.join(CERT_FILES.values())})"
        )
    paths = {role: folder / name for role, name in CERT_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise SecurityError(
            f"TLS certificate directory {folder} lacks {', '.join(missing)} "
            f"(expected {', '.join(CERT_FILES.values())}; "
            f"python -m fluoden_batch.compute.security {folder} writes a self-signed set)"
        )
    ca, cert, key = (str(paths[r].resolve()) for r in ("ca", "cert", "key"))
    security = Security(
        require_encryption=True,
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )
    try:  # load the files now, so a bad pair fails here and not in a worker on a node
        security.get_connection_args("client")
        security.get_listen_args("scheduler")
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise SecurityError(f"TLS certificates in {folder} cannot be used: {exc}") from exc
    return security


def write_self_signed(folder: Path) -> dict[str, Path]:
    """Write a self-signed ``ca.pem``/``cert.pem``/``key.pem`` set into ``folder``.

    The certificate is its own authority; every endpoint presents it. Good for one user's
    cluster on a shared file system; a site CA is better where one exists.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    temp = make_security(True)
    assert temp is not None
    cert, key = temp.tls_ca_file, temp.tls_client_key
    paths = {role: folder / name for role, name in CERT_FILES.items()}
    for role, text in (("ca", cert), ("cert", cert), ("key", key)):
        path = paths[role]
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if role == "key" else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m fluoden_batch.compute.security DIR``: write a self-signed certificate set."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m fluoden_batch.compute.security DIR", file=sys.stderr)
        return 2
    for path in write_self_signed(Path(args[0])).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

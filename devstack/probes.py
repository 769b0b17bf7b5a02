"""Is something listening, and is it the service we expect? Standard library only."""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlsplit


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not port_open(host, port)


def ephemeral_port(host: str = "127.0.0.1") -> int:
    """A port the system deems free now (bound to port 0 and released): ports handed
    out one after another differ, unlike a scan from a fixed start."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def next_free_port(host: str, start: int, avoid: set[int] = frozenset()) -> int:
    for port in range(start, start + 200):
        if port not in avoid and port_free(host, port):
            return port
    raise OSError(f"no free port on {host} in {start}..{start + 199}")


def is_kafka(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request and check the reply's shape.

    Hand-written on purpose: the launcher must tell Kafka from another
    program before any Python dependency is installed.
    """
    client_id = b"devstack"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 10)
    except OSError:
        return False
    if header is None:
        return False
    size, got_correlation, error_code = struct.unpack(">iih", header)
    return got_correlation == correlation_id and 0 < size < 1 << 20 and error_code in (0, 35)


def is_postgres(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a PostgreSQL SSLRequest; a server answers with one byte, S or N."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">ii", 8, 80877103))
            reply = sock.recv(1)
    except OSError:
        return False
    return reply in (b"S", b"N")


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def split_bootstrap(servers: str) -> tuple[str, int]:
    first = servers.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    return host or "localhost", int(port or 9092)


def split_database_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 5432


def local_host(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1", "")

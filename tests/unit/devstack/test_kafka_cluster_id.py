"""The KRaft cluster id devstack formats a new log dir with."""

from __future__ import annotations

import base64
import uuid

from devstack import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """One random id in 64 started with "-", which kafka-storage took for an option."""
    ids = iter([uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(ids))
    assert base64.urlsafe_b64encode(b"\xfb" + bytes(15)).decode().startswith("-")
    cluster_id = kafka.new_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA" and len(cluster_id) == 22

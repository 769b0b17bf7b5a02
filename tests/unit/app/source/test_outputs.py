"""Dead letters that fit their topic: never dropped, never refused (docs/contract.md,
Bad input)."""

from __future__ import annotations

import hashlib

from app.limits import headers_bytes
from app.source.outputs import fit

HEADERS = [("reason", b"missing_field"), ("source_offset", b"12")]


def test_a_dead_letter_that_fits_is_sent_as_it_came():
    assert fit(b"k", b"v" * 100, HEADERS, 1_000) == (b"k", b"v" * 100, HEADERS)


def test_a_dead_letter_too_large_keeps_a_prefix_its_size_and_its_digest():
    value = bytes(range(256)) * 8_000  # 2 MB
    key, cut, headers = fit(b"key", value, HEADERS, 1_000_000)
    h = dict(headers)
    assert key == b"key" and value.startswith(cut) and len(cut) > 990_000
    assert len(key) + len(cut) + headers_bytes(headers) <= 1_000_000
    assert h["truncated"] == b"value" and h["value_size"] == str(len(value)).encode()
    assert h["value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["reason"] == b"missing_field"  # what was there stays


def test_a_huge_key_is_cut_too():
    key, value, headers = fit(b"k" * 5_000, b"v" * 5_000, HEADERS, 2_000)
    h = dict(headers)
    assert len(key) + len(value) + headers_bytes(headers) <= 2_000
    assert h["truncated"] == b"key,value" and h["key_size"] == b"5000"
    assert h["key_sha256"] == hashlib.sha256(b"k" * 5_000).hexdigest().encode()


def test_a_huge_key_with_a_small_value_cuts_only_the_key():
    key, value, headers = fit(b"k" * 5_000, b"v", HEADERS, 3_000)
    assert value == b"v" and dict(headers)["truncated"] == b"key"
    assert len(key) + len(value) + headers_bytes(headers) <= 3_000

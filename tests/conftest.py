"""Shared by unit and integration tests."""

import pytest

# the fake-vs-broker contract's behaviours assert in a module of their own
pytest.register_assert_rewrite("tests.kafka_contract")

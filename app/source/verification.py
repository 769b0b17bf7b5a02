"""Kafka 4.x answers some produce requests of a transaction with a retriable
NOT_ENOUGH_REPLICAS while it verifies that the partition is in the transaction
(KIP-890, reported to aiokafka). aiokafka retries and nothing is lost or duplicated,
but it logs a warning for each one; this counts them instead."""

from __future__ import annotations

import logging


class VerificationRetries(logging.Filter):
    """Drops aiokafka's NotEnoughReplicasError retry warnings and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "NotEnoughReplicasError" in record.getMessage():
            self.count += 1
            return False
        return True

    def install(self) -> VerificationRetries:
        logging.getLogger("aiokafka.producer.sender").addFilter(self)
        return self

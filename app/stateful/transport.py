"""Faust's Kafka transport, with the worker's consumer reading read_committed.

The user-keyed topic is written in Kafka transactions (app/source/transaction.py);
only committed records may reach the stateful stage, and the offsets its commit
markers take must not hold the consumer's own commits back. faust-streaming reads
read_committed only under its own `processing_guarantee="exactly_once"`, which
would also make every Faust producer transactional; this asks for the isolation
level alone.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it creates its fetcher
        consumer._isolation_level = "read_committed"
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        """Offsets offset_from..offset_to-1 hold no record for this consumer.

        faust-streaming records the gap up to and including offset_to, the offset of
        the record that follows it, so that record's offset is acknowledged twice and
        its commit stops at every gap (runs of consecutive offsets break at the
        duplicate). A transactional topic has a gap after every transaction (its
        commit marker), so commits fell further behind without end, and memory grew
        with them.
        """
        await driver.Consumer._add_gap(self, tp, offset_from, offset_to - 1)


class ReadCommittedTransport(driver.Transport):
    Consumer = _Consumer

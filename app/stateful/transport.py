"""Faust's Kafka transport, with the worker's consumer reading read_committed.

The user-keyed topic is written in Kafka transactions (app/source/transaction.py);
only committed records may reach the stateful stage. faust-streaming reads
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


class ReadCommittedTransport(driver.Transport):
    Consumer = _Consumer

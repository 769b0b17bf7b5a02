"""A single-node Apache Kafka broker in KRaft mode, jars resolved by Maven."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack import probes
from devstack.process import Background, StackError, require, say

POM = Path(__file__).with_name("pom.xml")
JAVA_HINT = "Install a JDK 17+ (Debian: `apt-get install openjdk-17-jre-headless`)."
MVN_HINT = "Install Maven (Debian: `apt-get install maven`); it fetches Kafka from Maven Central."

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass
class KafkaBroker:
    state: Path
    host: str = "127.0.0.1"
    port: int = 9092

    @property
    def home(self) -> Path:
        return self.state / "kafka"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def process(self) -> Background:
        return Background(self.home / "stdout.log", self.home / "kafka.pid")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def running_pid(self) -> int | None:
        return self.process.running_pid()

    def classpath(self) -> str:
        """Resolve the broker's jars once per pom.xml version; Maven caches them in ~/.m2."""
        require("java", JAVA_HINT)
        require("mvn", MVN_HINT)
        self.home.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
        cached = self.home / f"classpath-{digest}.txt"
        if cached.exists() and all(Path(p).exists() for p in cached.read_text().split(":")):
            return cached.read_text().strip()
        say("kafka: resolving broker jars from Maven Central (first run only)...")
        started = time.monotonic()
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={cached}",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not cached.exists():
            raise StackError(
                "mvn could not resolve the Kafka jars (is Maven Central reachable?):\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        say(f"kafka: jars resolved in {time.monotonic() - started:.1f}s")
        return cached.read_text().strip()

    def start(self, deadline_s: float = 90.0) -> None:
        classpath = self.classpath()
        data = self.home / "data"
        layout_file = self.home / "layout.txt"
        previous = layout_file.read_text().split() if layout_file.exists() else []
        controller_port = probes.next_free_port(self.host, self.port + 1, avoid={self.port})
        if (
            len(previous) == 2
            and previous[0] == str(self.port)
            and probes.port_free(self.host, int(previous[1]))
        ):
            controller_port = int(previous[1])
        layout = f"{self.port} {controller_port}"
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={self.host}:{controller_port}",
                    f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self.log))
        java = require("java", JAVA_HINT)
        jvm = [
            java,
            "-Xms256m",
            "-Xmx1g",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            classpath,
        ]
        if (data / "meta.properties").exists() and previous == layout.split():
            self._launch(jvm, props, deadline_s)
            return
        # A KRaft log is formatted for one controller address; a changed port needs a new one.
        if data.exists():
            say(f"kafka: ports changed ({' '.join(previous)} -> {layout}); new empty log dir")
            subprocess.run(["rm", "-rf", str(data)], check=True)
        cluster_id = new_cluster_id()
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise StackError(f"kafka: formatting the log dir failed:\n{fmt.stdout}{fmt.stderr}")
        layout_file.write_text(layout)
        self._launch(jvm, props, deadline_s)

    def _launch(self, jvm: list[str], props: Path, deadline_s: float) -> None:
        process = self.process
        took = process.start_until_ready(
            [*jvm, "kafka.Kafka", str(props)],
            lambda: probes.is_kafka(self.host, self.port),
            deadline_s,
            f"kafka did not become ready on {self.bootstrap}",
            env={**os.environ, "KAFKA_HEAP_OPTS": ""},
            logs=(self.log, process.log),
        )
        say(f"kafka: ready on {self.bootstrap} in {took:.1f}s")

    def stop(self) -> bool:
        return self.process.stop(grace_s=30.0)


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes them: 22 URL-safe base64 characters, never
    starting with "-" (one in 64 would, and the storage tool took it for an option:
    a fresh stack failed to start in one CI run)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id

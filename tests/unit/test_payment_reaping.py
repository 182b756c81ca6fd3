"""Payment forgets a handled command only once Kafka can no longer redeliver it: the
retention of services/blocks/retention.py outlasts what every deployment keeps in a topic."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from deploy.common import kafka_common
from deploy.local.files import kafka_nodes, kafka_properties
from services.blocks.retention import (
    HANDLED_RETENTION,
    KAFKA_DEFAULT_RETENTION,
    KAFKA_DEFAULT_SEGMENT_ROLL,
    LONGEST_IN_TOPIC,
)
from services.runtime.topology import TOPICS


def _local_broker() -> dict[str, str]:
    lines = kafka_properties(kafka_nodes(Path("/run"), 1)[-1], 1).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_the_local_broker_keeps_a_command_less_long_than_payment_remembers_it() -> None:
    broker = _local_broker()
    retention = timedelta(hours=int(broker.get("log.retention.hours", "168")))
    roll = timedelta(hours=int(broker.get("log.roll.hours", "168")))
    assert retention + roll <= LONGEST_IN_TOPIC < HANDLED_RETENTION


def test_compose_and_kubernetes_keep_kafkas_default_retention() -> None:
    # They run the upstream image configured by environment; a retention or roll set
    # there would have to be counted in services/blocks/retention.py.
    overridden = [name for name in kafka_common() if "LOG_RETENTION" in name or "LOG_ROLL" in name]
    assert overridden == []
    assert KAFKA_DEFAULT_RETENTION + KAFKA_DEFAULT_SEGMENT_ROLL == LONGEST_IN_TOPIC


def test_no_topic_sets_its_own_retention_or_segment_roll() -> None:
    per_topic = {
        topic: key for topic, config in TOPICS.items() for key in config if key.startswith(("retention", "segment"))
    }
    assert per_topic == {}

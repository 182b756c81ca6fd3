"""Creates what the services need before they start: one database and one role per
service (database-per-service), their versioned migrations, and the Kafka topics.
Every step is idempotent."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from deploy.local.errors import StackError
from services.runtime import migrations
from services.runtime.topology import INFRA, TOPIC_PARTITIONS, TOPICS, Group

TOPIC_TIMEOUT_SECONDS = 30.0


def databases(say: Callable[[str], None]) -> None:
    migrations.provision("127.0.0.1", INFRA.postgres, say)


def topics(say: Callable[[str], None]) -> None:
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{INFRA.kafka}"})
    wanted = [NewTopic(name, TOPIC_PARTITIONS, 1, config=config) for name, config in TOPICS.items()]
    created = 0
    for name, future in admin.create_topics(wanted, request_timeout=TOPIC_TIMEOUT_SECONDS).items():
        try:
            future.result(timeout=TOPIC_TIMEOUT_SECONDS)
            created += 1
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"creating topic {name} failed: {error}") from None
    say(f"kafka: {len(wanted)} topics, {created} created now")


def provision(say: Callable[[str], None]) -> None:
    try:
        databases(say)
    except psycopg.Error as error:
        raise StackError(f"preparing the databases failed: {error}".strip()) from None
    topics(say)


def saga_groups_stable() -> bool:
    """Whether every consume loop of the saga (each Group) has members with partitions:
    the stack is ready only then, or the first rides would wait for the groups to form."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{INFRA.kafka}", "log_level": 0})
    try:
        # Plain strings: librdkafka's admin client takes a list of str subclasses for duplicates.
        futures = admin.describe_consumer_groups([group.value for group in Group], request_timeout=5)
        groups = [future.result(timeout=10) for future in futures.values()]
    except KafkaException:
        return False
    return all(g.state == ConsumerGroupState.STABLE and g.members for g in groups)

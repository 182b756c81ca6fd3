from services.runtime.topology import INFRA, SERVICES, TOPICS, Group, Topic, service


def test_every_port_is_used_once() -> None:
    ports = [p for s in SERVICES for p in (s.app_port, s.ingress_port, s.egress_port, s.admin_port)]
    for value in vars(INFRA).values():
        ports += list(value) if isinstance(value, tuple) else [value]
    ports += [p + i for p in (INFRA.zookeeper, INFRA.zookeeper_peer, INFRA.zookeeper_election) for i in (1, 2)]
    assert len(ports) == len(set(ports))


def test_every_call_names_a_known_service_and_nobody_calls_itself() -> None:
    names = {s.name for s in SERVICES}
    for spec in SERVICES:
        assert set(spec.calls) <= names
        assert spec.name not in spec.calls


def test_the_probe_path_reaches_every_service_from_rider() -> None:
    seen, frontier = set(), ["rider"]
    while frontier:
        name = frontier.pop()
        seen.add(name)
        frontier.extend(c for c in service(name).calls if c not in seen)
    assert seen == {s.name for s in SERVICES}


def test_unknown_service_is_a_clear_error() -> None:
    try:
        service("taxi")
    except KeyError as error:
        assert "taxi" in str(error) and "rider" in str(error)
    else:
        raise AssertionError("expected KeyError")


def test_every_saga_loop_consumes_saga_topics_and_no_topic_is_unread_but_the_dead_letters() -> None:
    consumed = {topic for group in Group for topic in group.topics}
    assert consumed <= set(TOPICS)
    assert set(TOPICS) - consumed == {Topic.DEAD_LETTERS}

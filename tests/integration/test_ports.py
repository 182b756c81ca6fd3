import os
import socket

from deploy.local.ports import owner_of


def test_the_owner_of_a_busy_port_is_named_and_a_free_port_has_none() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        owner = owner_of(port)
        assert owner is not None and f"pid {os.getpid()}" in owner
    assert owner_of(port) is None

"""Free loopback ports, for stacks that must not collide (tests, benchmarks)."""

from __future__ import annotations

import socket

from deploy.parts import StackPorts


def free_port(offset_free: int = 0) -> int:
    """A port free on loopback now (and, if asked, also ``port + offset_free``)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not offset_free:
            return port
        if port + offset_free < 65536 and _free(port + offset_free):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_stack_ports() -> StackPorts:
    """A full set of stack ports, each free now."""
    grpc = StackPorts().grpc_offset
    return StackPorts(
        nats=free_port(), pg=free_port(), s3=free_port(grpc),
        weed_master=free_port(grpc), weed_volume=free_port(grpc),
        weed_filer=free_port(grpc), weed_admin=free_port(grpc), wechat=free_port(),
    )

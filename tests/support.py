"""Helpers shared by the tests."""

from __future__ import annotations

from deploy.freeports import free_port, free_stack_ports

__all__ = ["free_port", "free_stack_ports"]

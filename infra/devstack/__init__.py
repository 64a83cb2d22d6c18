"""The embedded development stack: PostgreSQL and NATS from their wheels."""

from infra.devstack.stack import DevStack, StackAlreadyRunning

__all__ = ["DevStack", "StackAlreadyRunning"]

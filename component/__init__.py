"""The WAMP component that serves etcd tables under Crossbar."""

from .session import EtcdComponent

__all__ = ["EtcdComponent"]

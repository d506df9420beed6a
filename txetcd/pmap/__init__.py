"""Typed persistent maps stored in etcd (successor of txaioetcd's pmap layer)."""

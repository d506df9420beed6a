"""The suite's closing lines count the tests passed against each etcd version; every way a
test names its etcd counts (conftest's ids, a module's own bare versions, with other params)."""

from __future__ import annotations

from .conftest import ETCD_IDS, etcd_of


def test_every_etcd_parameter_shape_is_counted() -> None:
    v35, v34 = ETCD_IDS
    assert etcd_of(f"tests/test_watch.py::test_x[{v35}]") == v35
    assert etcd_of(f"tests/test_lease.py::test_x[twisted-{v34}]") == v34
    assert etcd_of(f"tests/test_x.py::test_x[{v34}-json]") == v34
    # test_hostile_input's node fixture is parametrized by bare version
    assert etcd_of("tests/test_hostile_input.py::test_poison[3.5]") == v35
    assert etcd_of("tests/test_hostile_input.py::test_poison[3.4-cbor]") == v34
    assert etcd_of("tests/test_cli.py::test_run") is None
    assert etcd_of("tests/test_cli.py::test_kinds[3.45]") is None

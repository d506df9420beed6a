"""The WAMP procedures of each configured table, over txetcd and txetcd.pmap.

One module per concern: ``table`` (get/put/delete/scan/count of one table), ``indexes``
(secondary-index lookups and scans), ``history`` (a row's past from etcd's MVCC history),
``txn`` (all-or-nothing ops across tables); what they share: ``arguments`` (call checks),
``wire`` (WAMP <-> stored keys and values), ``payload`` (what every serializer carries),
``answers`` (size-bounded answers), ``schema`` and ``flatbuf`` (typed values), ``errors`` (the
typed ``<prefix>.error.*`` kinds). Every call's arguments are checked before etcd is touched,
so a refused call writes nothing. ``component`` registers them on its WAMP session; nothing
here holds one.
"""

"""Typed persistent maps stored in etcd (successor of txaioetcd's pmap layer).

``Database(client, prefix=b"...")`` holds tables (``PersistentMap`` and the ``Map<Key><Value>``
classes) in numbered slots, read and written in optimistic, serializable transactions::

    tab_users = pmap.MapUuidCbor(1, marshal=lambda u: u.marshal(), unmarshal=User.unmarshal)
    db = Database(Client(reactor))
    async with db.begin(write=True) as txn:
        tab_users[txn, user.oid] = user

The same code runs on asyncio over ``txetcd.asyncio.Client(url)``, with the same guarantees
(``txetcd.pmap.transaction``): pmap awaits only the client's public calls, and takes its
futures, locks and sleeps from the client's driver. Calls return Deferreds on Twisted (so
txaioetcd's ``yield`` keeps working) and Tasks on asyncio. ``PersistentMap.watch`` needs the
client's ``watch``, which the asyncio client does not have yet.
"""

from .codecs import *  # noqa: F403 - the codecs are part of the pmap API
from .codecs import __all__ as _codecs_all
from .database import Database
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .layout import CATALOG_SLOT, MAX_SLOT, TableLayout
from .maps import *  # noqa: F403
from .maps import __all__ as _maps_all
from .transaction import DbTransaction, DbTransactionStats

__all__ = [*_codecs_all, *_errors_all, *_maps_all, "Database", "DbTransaction",
           "DbTransactionStats", "CATALOG_SLOT",
           "MAX_SLOT", "TableLayout"]

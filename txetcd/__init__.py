"""txetcd: an etcd v3 client for Twisted and asyncio over etcd's gRPC JSON gateway.

The successor of txaioetcd: the same public names, working against etcd 3.4 and later, with
typed results and errors, transactions, namespaces and several endpoints. ``txetcd.Client`` is
the Twisted client (Deferreds, txaioetcd's signature); ``txetcd.asyncio.Client`` the same client
on asyncio.

Where txaioetcd and etcd name a call differently both exist; txaioetcd's is primary:
``submit`` (``Success`` or raises ``Failed``) beside ``txn`` (either branch's ``TxnResult``),
``set`` beside ``put``, ``lease`` (a managed ``Lease``) beside ``lease_grant`` (a bare grant).
``__all__`` is what an application needs; the rest of each module's names (every error class in
``txetcd.errors``, the limits in ``txetcd.core``, the typed maps in ``txetcd.pmap``) stay
importable from their modules.
"""

from typing import Any

import txaio

# txaioetcd chose Twisted on import; so does txetcd, unless the program chose a framework.
if not (getattr(txaio, "using_twisted", False) or getattr(txaio, "using_asyncio", False)):
    txaio.use_twisted()

__version__ = "0.1.0"

from .client import Client
from .errors import (
    AuthFailed,
    Compacted,
    DuplicateKey,
    Error,
    EtcdError,
    Expired,
    Failed,
    FutureRevision,
    InvalidAuthToken,
    KeyNotFound,
    LeaseExpired,
    LeaseNotFound,
    LeaseNotGranted,
    LockNotHeld,
    NoSpace,
    PermissionDenied,
    ProtocolError,
    RequestTooLarge,
    Timeout,
    TooManyOps,
    TooManyRequests,
    Unavailable,
    UnsupportedServer,
)
from .op import (
    Comp,
    CompCreated,
    CompLease,
    CompModified,
    CompValue,
    CompVersion,
    Op,
    OpDel,
    OpGet,
    OpSet,
    OpTxn,
    Transaction,
)
from .types import (
    Deleted,
    Header,
    KeySet,
    KeyValue,
    Member,
    Range,
    Revision,
    Status,
    Success,
    TxnResult,
    prefix_end,
)

__all__ = [
    "Client", "__version__",
    # keys and results
    "KeySet", "prefix_end", "KeyValue", "Range", "Revision", "Deleted", "TxnResult", "Success",
    "Header", "Status", "Member",
    # operations, compares and transactions
    "Transaction", "Op", "OpGet", "OpSet", "OpDel", "OpTxn", "Comp", "CompValue", "CompVersion",
    "CompCreated", "CompModified", "CompLease",
    # the errors an application catches (every one: txetcd.errors); Error, Expired: txaioetcd's
    "EtcdError", "Error", "Failed", "Expired", "Compacted", "Unavailable", "Timeout",
    "PermissionDenied", "AuthFailed", "LeaseNotFound", "LeaseExpired",
]

from .concurrency import Election, LeaderKey, LeaderObserver, Leadership, Lock, NotLeader
from .deferreds import Acquiring
from .lease import Lease, LeaseGrant, LeaseInfo, LeaseLost

__all__ += ["Election", "Lock", "Lease", "LeaseLost"]

# The persistent-map layer; imported last because it builds on the names above.
from . import pmap  # noqa: E402
from .pmap import Database, DbTransaction, DbTransactionStats  # noqa: E402

__all__ += ["Database", "DbTransaction", "DbTransactionStats"]


def __getattr__(name: str) -> Any:
    """txaioetcd's map classes (``txetcd.MapUuidCbor``...), which live in ``txetcd.pmap``."""
    if name.startswith("Map") and hasattr(pmap.maps, name):
        return getattr(pmap.maps, name)
    raise AttributeError(f"module 'txetcd' has no attribute {name!r}")

from .watch import EventType, Watch, WatchCanceled, WatchCompacted, WatchEvent  # noqa: E402

__all__ += ["EventType", "Watch", "WatchCanceled", "WatchCompacted", "WatchEvent"]

# Importable for txaioetcd programs and older code, not part of the advertised surface.
_COMPATIBLE = (DuplicateKey, InvalidAuthToken, KeyNotFound, LeaseNotGranted, LockNotHeld, NoSpace,
               ProtocolError, RequestTooLarge, TooManyOps, TooManyRequests, UnsupportedServer,
               FutureRevision, Acquiring, LeaseGrant, LeaseInfo, LeaderKey, LeaderObserver,
               Leadership, NotLeader, pmap)

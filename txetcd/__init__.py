"""txetcd: an etcd v3 client for Twisted over etcd's gRPC JSON gateway.

The successor of txaioetcd: the same public names, working against etcd 3.4 and later, with
typed results and errors, transactions, namespaces and several endpoints.
"""

import txaio

# txaioetcd chose Twisted on import; so does txetcd, unless the program chose a framework.
if not (getattr(txaio, "using_twisted", False) or getattr(txaio, "using_asyncio", False)):
    txaio.use_twisted()

__version__ = "0.1.0"

from .client import DEFAULT_URL, MAX_REQUEST_BYTES, MAX_TXN_OPS, Client
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
    "Client", "DEFAULT_URL", "MAX_REQUEST_BYTES", "MAX_TXN_OPS",
    "AuthFailed", "Compacted", "DuplicateKey", "Error", "EtcdError", "Expired", "Failed",
    "FutureRevision", "InvalidAuthToken", "KeyNotFound", "LeaseExpired", "LeaseNotFound",
    "LeaseNotGranted", "LockNotHeld",
    "NoSpace", "PermissionDenied", "ProtocolError", "RequestTooLarge", "Timeout", "TooManyOps",
    "TooManyRequests", "Unavailable", "UnsupportedServer",
    "Comp", "CompCreated", "CompLease", "CompModified", "CompValue", "CompVersion", "Op", "OpDel",
    "OpGet", "OpSet", "OpTxn", "Transaction",
    "Deleted", "Header", "KeySet", "KeyValue", "Member", "Range", "Revision", "Status", "Success",
    "TxnResult", "prefix_end",
]

from .concurrency import Election, LeaderKey, LeaderObserver, Leadership, Lock, NotLeader
from .deferreds import Acquiring
from .lease import Lease, LeaseGrant, LeaseInfo, LeaseLost

__all__ += [
    "Election", "LeaderKey", "LeaderObserver", "Leadership", "Lock", "NotLeader",
    "Acquiring", "Lease", "LeaseGrant", "LeaseInfo", "LeaseLost", "__version__",
]

# The persistent-map layer; imported last because it builds on the names above.
from . import pmap  # noqa: E402
from .pmap import Database, DbTransaction, DbTransactionStats  # noqa: E402
from .pmap.maps import (  # noqa: E402 - txaioetcd exported its map classes at the top
    MapOidCbor,
    MapOidFlatBuffers,
    MapOidJson,
    MapOidOid,
    MapOidPickle,
    MapOidString,
    MapOidUuid,
    MapSlotUuidUuid,
    MapStringCbor,
    MapStringFlatBuffers,
    MapStringJson,
    MapStringOid,
    MapStringPickle,
    MapStringString,
    MapStringUuid,
    MapUuidCbor,
    MapUuidFlatBuffers,
    MapUuidJson,
    MapUuidOid,
    MapUuidPickle,
    MapUuidString,
    MapUuidStringUuid,
    MapUuidUuid,
    MapUuidUuidCbor,
    MapUuidUuidSet,
    MapUuidUuidUuid,
)

__all__ += ["Database", "DbTransaction", "DbTransactionStats", "pmap",
            "MapOidCbor",
            "MapOidFlatBuffers",
            "MapOidJson",
            "MapOidOid",
            "MapOidPickle",
            "MapOidString",
            "MapOidUuid",
            "MapSlotUuidUuid",
            "MapStringCbor",
            "MapStringFlatBuffers",
            "MapStringJson",
            "MapStringOid",
            "MapStringPickle",
            "MapStringString",
            "MapStringUuid",
            "MapUuidCbor",
            "MapUuidFlatBuffers",
            "MapUuidJson",
            "MapUuidOid",
            "MapUuidPickle",
            "MapUuidString",
            "MapUuidStringUuid",
            "MapUuidUuid",
            "MapUuidUuidCbor",
            "MapUuidUuidSet",
            "MapUuidUuidUuid",
            ]

from .watch import EventType, Watch, WatchCanceled, WatchCompacted, WatchEvent  # noqa: E402

__all__ += ["EventType", "Watch", "WatchCanceled", "WatchCompacted", "WatchEvent"]

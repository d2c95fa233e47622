"""Several xmppd nodes serving the same domains (issue 15), on Redis (bench/RESULTS.md,
"cluster engine"): a client on any node reaches any user on any node. Built by the
server when `[cluster] engine` is set; core, not an extension: no extension knows
whether a recipient is local.

Keys (a node is named by `[cluster] node`; each start of it is a new random epoch):
- `xmppd:node:<node>`: liveness, set with a TTL of node_timeout and refreshed every
  heartbeat. Each node checks every node it knows at each heartbeat; one whose key is
  gone is dead: its sessions leave every node's table and its keys go, and the node
  that removed them sends the unavailable presence of its available sessions.
- `xmppd:sessions:<node>`: a hash of the node's sessions (full JID -> JSON: available,
  priority, last presence, roster interest, `Session.shared`), with its epoch and the
  sequence number of its last change; each change is also published on the channel
  `xmppd:registry`. Every node keeps all the others' in memory (`Host.remote`, as
  RemoteSession objects), so that routing stays synchronous. A starting node
  subscribes first and reads the hashes after; a change it already has in a hash is
  skipped by its sequence number, and a gap makes it read that node's hash again.
- `xmppd:inbox:<node>`: a stream, the node's inbox, read by one reader through a
  consumer group (entries acknowledged and deleted once handled). `RemoteSession.send`
  adds a "fwd" entry to the recipient's node; that node hands the stanza to its local
  session (whose flow control and XEP-0198 apply there) and answers "done" in the
  sender's inbox. The forward is one of the `writes` of the client stanza being routed
  (xmppd/router.py CURRENT_WRITES): its XEP-0198 ack comes only after the answer.
  A "fwd" carries the sender node's registry sequence number, and the receiver first
  applies the sender's registry up to it: what the sender knew when it routed (a
  resource that enabled carbons) is known where the stanza lands.
  A stanza whose session is gone when it arrives, or whose node died before answering,
  is delivered again by the rules among the local sessions only (never forwarded twice):
  a message to another resource or offline storage, an iq get/set refused. A dead
  node's sessions stay listed until what was sent to them is delivered again, so that
  nothing routed later overtakes it.

Order per sender and recipient: a node writes its registry changes, forwards and
answers through one writer, in the order they were made, so one sender's stanzas to one
node enter its inbox in order, and one reader hands them to the sessions in that order.

- `xmppd:changed`: pub/sub, user data that nodes keep in memory changed on one of them
  (`user-data-changed`: a block list, archive preferences); the others hear
  `user-data-changed-elsewhere` and forget their copy.

While Redis cannot be reached (restarted: it keeps its data in its append-only file),
the writer sends its batch again every heartbeat and nothing forwarded meanwhile is
acked; a batch whose reply was lost may be taken twice, so receivers skip a registry
change by its sequence number and a forward by its id. The readers reconnect, and the
registry is read again from the hashes.
"""

from xmppd.cluster.node import Cluster

__all__ = ["Cluster"]

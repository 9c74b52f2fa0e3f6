"""The web side's guards: what each tuning relies on in daphne, autobahn, Twisted,
Channels and redis-py (attributes, the signatures it overrides or calls, and
where cheap a self-test of the behaviour: consumers/server/compat_checks.py), and what
runs instead when a release changed it (progress/compat.py has the mechanism).

- LEAN_PROTOCOL: consumers/server/ws_protocol.py TaskPulseWebSocketProtocol; else
  daphne's protocol (with the backlog still).
- CLOSE_HANDSHAKE: a close frame on protocol errors and a 5 s close handshake;
  else autobahn's 1 s and a dropped connection. (The protocol's close codes
  need no guard: they are 4xxx codes, sent through public APIs everywhere.)
- DAPHNE_SERVER: listen backlog 4096, an Inbox per connection; else Twisted's
  backlog (50) and daphne's asyncio.Queue.
- DIRECT_WRITE: consumers/server/direct_write.py; else Twisted's buffered writes.
- SEND_BACKLOG: Twisted's write buffer read in bytes (TLS too); else
  Twisted's producer pause (consumers/server/send_backlog.py PausedFlag).
- SCOPE_EXTENSIONS: the backlog reaches the consumer at all; else nothing
  can bound slow readers, and an error is logged.
- CONSUMER_LOOP: consumers/server/consumer_loop.py's one-inbox loop; else Channels' own.
- SUBSCRIBER_SOCKET: consumers/server/socket_link.py, hiredis on the pub/sub socket;
  else redis-py's PubSub (consumers/subscriber.py).
"""

from __future__ import annotations

import inspect
import logging
import re

from consumers.server import compat_checks
from progress import compat
from progress.compat import Guard
from progress.store.tuned import takeover_check

logger = logging.getLogger(__name__)

_AUTOBAHN = "autobahn.websocket.protocol"
_OPTIONS_READ = ("autoFragmentSize", "maskServerFrames", "maxMessagePayloadSize", "failByDrop")


def _options_are_config_attrs() -> list[str]:
    """The options send_text_now reads (and failByDrop) are still per-protocol options."""
    names = set(compat.resolve(f"{_AUTOBAHN}:WebSocketServerProtocol.CONFIG_ATTRS"))  # type: ignore[call-overload]
    return [f"WebSocketServerProtocol.CONFIG_ATTRS has no {name}"
            for name in _OPTIONS_READ if name not in names]


def _own_options_are_options() -> list[str]:
    """The options the protocol sets for itself (a close frame on protocol errors,
    a close handshake a busy client has time to answer) are still protocol options."""
    from consumers.server.ws_protocol import OWN_OPTIONS

    names = set(compat.resolve(f"{_AUTOBAHN}:WebSocketServerProtocol.CONFIG_ATTRS"))  # type: ignore[call-overload]
    return [f"{name} is no longer a protocol option" for name in OWN_OPTIONS if name not in names]


def _connect_creates_the_application() -> list[str]:
    """daphne's handshake still builds the scope and hands it to create_application."""
    source = inspect.getsource(
        compat.resolve("daphne.ws_protocol:WebSocketProtocol.onConnect"))  # type: ignore[arg-type]
    return [] if "create_application" in source else [
        "daphne's onConnect no longer calls create_application"]


def _dispatch_is_as_tested() -> list[str]:
    """Channels' dispatch still does what consumers/server/consumer_loop.py does, plus the database
    clean-up it skips (and nothing else that the skip would lose)."""
    source = inspect.getsource(
        compat.resolve("channels.consumer:AsyncConsumer.dispatch"))  # type: ignore[arg-type]
    awaited = set(re.findall(r"await\s+([\w.]+)\(", source))
    expected = {"aclose_old_connections", "handler"}
    return [] if awaited == expected and "get_handler_name" in source else [
        f"AsyncConsumer.dispatch awaits {sorted(awaited)}, not {sorted(expected)}"]


LEAN_PROTOCOL = Guard(
    name="the lean WebSocket protocol (slots, shared options, one-call frames)",
    fallback="daphne's own protocol runs: ~12 KB more per idle connection, and frames go "
             "through autobahn's full send path",
    distributions=("daphne", "autobahn", "Twisted"),
    requires=(
        "daphne.ws_protocol:WebSocketProtocol.onConnect",
        "daphne.ws_protocol:WebSocketProtocol.onOpen",
        f"{_AUTOBAHN}:WebSocketProtocol._connectionMade",
        f"{_AUTOBAHN}:WebSocketProtocol.sendData",
        f"{_AUTOBAHN}:WebSocketProtocol.STATE_OPEN",
        f"{_AUTOBAHN}:WebSocketServerProtocol.CONFIG_ATTRS",
        f"{_AUTOBAHN}:TrafficStats",
        "twisted.web.http:HTTPChannel",
        "twisted.internet.abstract:FileDescriptor.producer",
        "twisted.internet.abstract:FileDescriptor.unregisterProducer",
    ),
    assigns=(
        (f"{_AUTOBAHN}:WebSocketProtocol._connectionMade",
         ("CONFIG_ATTRS", "factory", "_perMessageCompress", "trafficStats", "state",
          "send_queue")),
        (f"{_AUTOBAHN}:WebSocketProtocol.sendData", ("send_queue", "transport")),
        (f"{_AUTOBAHN}:TrafficStats.reset", ("outgoingOctetsWireLevel",)),
        (f"{_AUTOBAHN}:WebSocketServerProtocol.processHandshake",
         ("http_request_data", "http_status_line", "http_headers", "http_request_params",
          "_wskey")),
        (f"{_AUTOBAHN}:WebSocketServerProtocol.succeedHandshake", ("http_response_data",)),
        ("daphne.ws_protocol:WebSocketProtocol.onConnect",
         ("request", "clean_headers", "application_deferred")),
    ),
    overrides=(
        ("daphne.ws_protocol:WebSocketProtocol.connectionMade", "(self)"),
        (f"{_AUTOBAHN}:WebSocketProtocol._connectionMade", "(self)"),
        ("daphne.ws_protocol:WebSocketProtocol.onOpen", "(self)"),
        (f"{_AUTOBAHN}:WebSocketProtocol.sendData", "(self, data, sync, chopsize)"),
    ),
    calls=(("twisted.internet.abstract:FileDescriptor.unregisterProducer", "self"),),
    extra=(_options_are_config_attrs, compat_checks.frame_problems),
)

# The close codes themselves need no tuning (PROTOCOL.md §4 revision 2: 4xxx codes,
# which autobahn's public sendClose accepts). What stays is how long a server close
# waits for the client's reply, and a close frame instead of a dropped connection on
# a protocol error: autobahn options the launcher's protocol sets for itself.
CLOSE_HANDSHAKE = Guard(
    name="close handshake (5 s for a busy client's reply, a close frame on protocol errors)",
    fallback="autobahn's defaults: a 1 s close handshake, protocol errors drop the connection",
    distributions=("autobahn",),
    extra=(_own_options_are_options,),
)

DAPHNE_SERVER = Guard(
    name="daphne's server tuning (listen backlog 4096, light input queue)",
    fallback="Twisted's listen backlog (50) and daphne's asyncio.Queue per connection",
    distributions=("daphne",),
    requires=(
        "daphne.server:Server.run",
        "daphne.server:Server.create_application",
        "daphne.server:Server.handle_reply",
    ),
    assigns=(
        ("daphne.server:Server.__init__", ("endpoints", "application")),
        ("daphne.server:Server.run", ("endpoints", "connections")),
        ("daphne.server:Server.create_application",
         ("connections", "application", "handle_reply")),
    ),
    overrides=(
        ("daphne.server:Server.run", "(self)"),
        ("daphne.server:Server.create_application", "(self, protocol, scope)"),
    ),
    calls=(("daphne.server:Server.handle_reply", "self, protocol, message"),),
)

DIRECT_WRITE = Guard(
    name="direct socket writes",
    fallback="Twisted's own TCP transport buffers every write until the next loop turn",
    distributions=("Twisted", "daphne"),
    requires=(
        "twisted.internet.tcp:Port.transport",
        "twisted.internet.tcp:Server.writeSomeData",
        "twisted.internet.abstract:FileDescriptor.write",
        "twisted.internet.abstract:FileDescriptor.dataBuffer",
        "twisted.internet.abstract:FileDescriptor._writeDisconnected",
        "daphne.server:Server.listen_success",
    ),
    assigns=(
        ("twisted.internet.abstract:FileDescriptor.__init__", ("_tempDataLen",)),
        ("twisted.internet.abstract:FileDescriptor.write", ("_tempDataLen", "_tempDataBuffer")),
        ("daphne.server:Server.run", ("http_factory",)),
    ),
    overrides=(
        ("twisted.internet.tcp:Server.write", "(self, bytes)"),
        ("daphne.server:Server.listen_success", "(self, port)"),
    ),
    calls=(("twisted.internet.tcp:Server.writeSomeData", "self, data"),),
    extra=(compat_checks.direct_write_problems,),
)

SEND_BACKLOG = Guard(
    name="reading the send backlog in bytes",
    fallback="the backlog is read through Twisted's producer API: frames queue once Twisted "
             "holds 64 KiB (its bufferSize) instead of 256 KiB",
    distributions=("Twisted",),
    requires=(
        "twisted.internet.abstract:FileDescriptor.dataBuffer",
        "twisted.internet.abstract:FileDescriptor.offset",
        "twisted.protocols.tls:TLSMemoryBIOProtocol",
    ),
    assigns=(
        ("twisted.internet.abstract:FileDescriptor.__init__", ("_tempDataLen",)),
        ("twisted.internet.abstract:FileDescriptor.doWrite",
         ("dataBuffer", "offset", "_tempDataLen")),
        ("twisted.protocols.tls:TLSMemoryBIOProtocol.makeConnection", ("_appSendBuffer",)),
    ),
    extra=(compat_checks.backlog_problems,),
)

SCOPE_EXTENSIONS = Guard(
    name="the send backlog in the consumer's scope",
    fallback="THE SLOW-READER BOUND IS OFF: frames are written as they come and a client "
             "that stops reading costs unbounded memory (run a daphne the guards know)",
    distributions=(),
    requires=(
        "daphne.cli:CommandLineInterface.server_class",
        "daphne.ws_protocol:WebSocketFactory.protocol",
        "daphne.server:Server.create_application",
    ),
    assigns=(
        ("daphne.cli:CommandLineInterface.__init__", ("parser",)),
        ("daphne.cli:CommandLineInterface.run", ("server_class",)),
        ("daphne.ws_protocol:WebSocketProtocol.onConnect", ("server",)),
    ),
    overrides=(("daphne.server:Server.create_application", "(self, protocol, scope)"),),
    calls=(("daphne.cli:CommandLineInterface.run", "self, args"),),
    extra=(_connect_creates_the_application,),
)

CONSUMER_LOOP = Guard(
    name="the one-inbox consumer loop",
    fallback="Channels' own loop (await_many_dispatch: a task and an asyncio.wait per "
             "message) and dispatch (a thread hop per message)",
    distributions=("channels",),
    requires=(
        "channels.consumer:AsyncConsumer.__call__",
        "channels.consumer:AsyncConsumer.dispatch",
        "channels.consumer:AsyncConsumer.channel_layer_alias",
        "channels.layers:get_channel_layer",
        "channels.exceptions:StopConsumer",
    ),
    assigns=(
        ("channels.consumer:AsyncConsumer.__call__",
         ("scope", "channel_layer", "channel_name", "channel_receive", "base_send", "dispatch")),
    ),
    overrides=(
        ("channels.consumer:AsyncConsumer.__call__", "(self, scope, receive, send)"),
        ("channels.consumer:AsyncConsumer.dispatch", "(self, message)"),
    ),
    calls=(("channels.layers:get_channel_layer", "alias"),),
    extra=(_dispatch_is_as_tested,),
)

SUBSCRIBER_SOCKET = Guard(
    name="reading the pub/sub socket with hiredis",
    fallback="redis-py's PubSub reads the channel layer's connection, one get_message per "
             "message",
    distributions=("redis",),
    requires=(
        "redis.asyncio.connection:ConnectionPool.make_connection",
        "redis.asyncio.connection:AbstractConnection.connect",
        "redis.asyncio.connection:AbstractConnection.disconnect",
        "hiredis:Reader",
    ),
    assigns=(("redis.asyncio.connection:Connection._connect", ("_writer",)),),
    calls=(
        ("redis.asyncio.connection:ConnectionPool.make_connection", "self"),
        ("redis.asyncio.connection:AbstractConnection.connect", "self"),
        ("redis.asyncio.connection:AbstractConnection.disconnect", "self"),
    ),
    extra=(takeover_check.async_transport_problems,),
)

SERVER_GUARDS = (LEAN_PROTOCOL, CLOSE_HANDSHAKE, DAPHNE_SERVER, DIRECT_WRITE, SEND_BACKLOG,
                 SCOPE_EXTENSIONS)
GUARDS = (*SERVER_GUARDS, CONSUMER_LOOP, SUBSCRIBER_SOCKET)


def check_all() -> dict[str, compat.Verdict]:
    """Decide every web-side guard now (the launcher's start-up): one line per tuning
    that is off, then one saying how many are on and which releases are installed
    (those the suite did not run with marked untested: reported, never acted on); a
    missing slow-reader bound is logged as an error too."""
    verdicts = {guard.name: compat.check(guard) for guard in GUARDS}
    distributions = dict.fromkeys(name for guard in GUARDS for name in guard.distributions)
    logger.info("TaskPulse: %d of %d tunings on; installed: %s", sum(
        verdict.enabled for verdict in verdicts.values()), len(verdicts),
        ", ".join(map(compat.describe_release, distributions)))
    if not verdicts[SCOPE_EXTENSIONS.name].enabled:
        logger.error("TaskPulse: slow readers are NOT bounded by this server (%s)",
                     verdicts[SCOPE_EXTENSIONS.name].reason)
    return verdicts

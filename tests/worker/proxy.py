"""A TCP proxy in front of PostgreSQL that can lose one reply after the server committed.

Real network faults for tests, not mocks: the worker talks to the real server
through this proxy. :meth:`FaultyProxy.go_down` makes the server unreachable.
:meth:`FaultyProxy.arm` names the statement whose reply to lose: the proxy reads the
client's messages (``Query``, and ``Parse``/``Bind`` of the extended protocol, so a
statement prepared once and executed by name is still recognised), pairs each
``Sync`` or ``Query`` with the ``ReadyForQuery`` that answers it, holds the reply to
a request that executes a matching statement until that ``ReadyForQuery`` (so the
server has committed), and, if it carried rows (a ``DataRow`` message), loses it and
everything after it on that connection and sets :attr:`FaultyProxy.tripped`. Replies
to every other statement pass at once, whatever their order. The test then calls
:meth:`FaultyProxy.cut_dark` and the client sees its connection drop, like a network
failure between the commit and the reply.

The proxy answers the client's TLS (and GSS) encryption request with "no" itself:
it reads PostgreSQL's message framing, which encryption would hide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from sqlalchemy.engine import make_url

_DATA_ROW = ord("D")
# Client messages that matter for pairing requests with replies.
_PARSE, _BIND, _SYNC, _QUERY = (ord(c) for c in "PBSQ")
_READY_FOR_QUERY = ord("Z")
_NOTIFICATION = ord("A")
# SSLRequest and GSSENCRequest: length 8, then a magic request code.
_ENCRYPTION_REQUESTS = frozenset(
    (8).to_bytes(4, "big") + code.to_bytes(4, "big") for code in (80877103, 80877104)
)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.dark = False
        self.saw_rows = False
        self.held = bytearray()
        # Prepared statements' SQL by name ("" is the unnamed one).
        self.prepared: dict[str, str] = {}
        # The SQL the request being sent (up to its Sync) executes, if any.
        self.executing: list[str] = []
        # One entry per ReadyForQuery still to come: the SQL that request executed.
        # The first answers the start-up, which executes nothing.
        self.pending: deque[list[str]] = deque([[]])

    def abort(self) -> None:
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class FaultyProxy:
    """Forwards bytes between clients and a server; can lose one reply on demand.

    Args:
        database_url: the server's URL. A TCP server (``host:port``) or a unix-socket
            one (``?host=/socket/dir``, as the embedded server's URL has it).
    """

    def __init__(self, database_url: str) -> None:
        """Prepare the proxy; :meth:`start` listens."""
        target = make_url(database_url)
        socket_dir = target.query.get("host")
        port = target.query.get("port") or target.port or 5432
        self.host = str(socket_dir) if socket_dir else target.host or "127.0.0.1"
        self.port = int(str(port))
        self._target = target
        self._lose: Callable[[str], bool] | None = None
        self.down = False
        self.refused = 0
        self.tripped = asyncio.Event()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free local port; return the database URL that goes through it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        query = {k: v for k, v in self._target.query.items() if k not in ("host", "port")}
        proxied = self._target.set(host="127.0.0.1", port=port, query=query)
        return proxied.render_as_string(hide_password=False)

    def arm(self, lose: Callable[[str], bool]) -> None:
        """Lose the first reply with rows to a statement whose SQL ``lose`` accepts.

        Only replies that complete after this call are considered; the proxy
        disarms itself once it has lost one.
        """
        self._lose = lose

    def cut_dark(self) -> int:
        """Drop the connections whose replies are being swallowed; return how many."""
        dark = [link for link in self._links if link.dark]
        for link in dark:
            link.abort()
        return len(dark)

    def go_down(self) -> None:
        """Drop every connection and refuse new ones (counted in :attr:`refused`)."""
        self.down = True
        for link in list(self._links):
            link.abort()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            if self.host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(
                    f"{self.host}/.s.PGSQL.{self.port}"
                )
            else:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._client_to_server(reader, link), self._server_to_client(up_reader, link)
            )
        finally:
            link.abort()
            self._links.discard(link)

    async def _client_to_server(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            # Refuse TLS and GSS encryption ourselves, so the session stays readable.
            while True:
                first = await reader.readexactly(8)
                if first not in _ENCRYPTION_REQUESTS:
                    break
                link.client.write(b"N")
                await link.client.drain()
            # The start-up message (or a cancel request): no type byte, then typed ones.
            rest = await reader.readexactly(int.from_bytes(first[:4], "big") - 8)
            link.server.write(first + rest)
            while True:
                header = await reader.readexactly(5)
                body = await reader.readexactly(int.from_bytes(header[1:5], "big") - 4)
                self._note_request(link, header[0], body)
                link.server.write(header + body)
                await link.server.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.abort()

    @staticmethod
    def _note_request(link: _Link, kind: int, body: bytes) -> None:
        """Record which SQL the client's request executes, for its reply to be judged."""
        if kind == _PARSE:
            name, _, rest = body.partition(b"\0")
            sql, _, _ = rest.partition(b"\0")
            link.prepared[name.decode()] = sql.decode()
        elif kind == _BIND:
            _portal, _, rest = body.partition(b"\0")
            statement, _, _ = rest.partition(b"\0")
            link.executing.append(link.prepared.get(statement.decode(), ""))
        elif kind == _QUERY:
            link.pending.append([body.rstrip(b"\0").decode()])
        elif kind == _SYNC:
            link.pending.append(link.executing)
            link.executing = []

    async def _server_to_client(self, reader: asyncio.StreamReader, link: _Link) -> None:
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                out = bytearray()
                while len(buffer) >= 5:
                    size = 1 + int.from_bytes(buffer[1:5], "big")
                    if len(buffer) < size:
                        break
                    message, buffer = bytes(buffer[:size]), buffer[size:]
                    out += self._pass(link, message)
                if out:
                    link.client.write(out)
                    await link.client.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()

    def _pass(self, link: _Link, message: bytes) -> bytes:
        """Return what of ``message`` (and of the reply held so far) goes to the client.

        Only the reply to a request that executes a statement to lose is held, until
        its ``ReadyForQuery``: the rest passes at once (a statement being prepared is
        answered before any ``Sync``, and waits for its answer).
        """
        kind = message[0]
        if link.dark:
            return b""
        if kind == _NOTIFICATION:  # asynchronous, outside any reply
            return message
        lose = self._lose
        executed = link.pending[0] if link.pending else []
        if kind == _READY_FOR_QUERY and link.pending:
            link.pending.popleft()
        if lose is None or not any(lose(sql) for sql in executed):
            return message
        link.held += message
        if kind == _DATA_ROW:
            link.saw_rows = True
        if kind != _READY_FOR_QUERY:
            return b""
        rows, link.saw_rows = link.saw_rows, False
        released, link.held = bytes(link.held), bytearray()
        if not rows:
            return released
        # The reply with rows is complete, so committed: lose it and all that follows.
        link.dark = True
        self._lose = None
        self.tripped.set()
        return b""

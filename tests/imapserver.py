"""A real IMAP4rev1 server for tests: one mailbox on a free loopback port, \\Seen flags kept.

It speaks enough of RFC 3501 for Python's imaplib: CAPABILITY, NOOP, LOGIN,
SELECT/EXAMINE, UID SEARCH, UID FETCH (BODY.PEEK[], BODY[], RFC822, FLAGS),
UID STORE (+FLAGS, -FLAGS, FLAGS, .SILENT), CREATE, UID COPY, UID MOVE (RFC 6851,
only when created with `move=True`), CLOSE and LOGOUT. Anything else is answered
BAD, the way a strict server would. Other folders only collect copied or moved
messages (`folders`).
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field

CAPABILITIES = "IMAP4rev1"
PASSWORD = "s3cret"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(\([^)]*\))|([^\s()"]+))')


@dataclass
class Stored:
    """One message in the mailbox."""

    uid: int
    data: bytes  # with CRLF line ends, as IMAP servers hand messages out
    flags: set[str] = field(default_factory=set)

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags


class ImapServer:
    """A running IMAP server with one user and one folder."""

    def __init__(
        self,
        user: str = "list",
        password: str = PASSWORD,
        folder: str = "INBOX",
        *,
        move: bool = False,
    ) -> None:
        self.user = user
        self.password = password
        self.folder = folder
        self.capabilities = CAPABILITIES + (" MOVE" if move else "")
        self.messages: list[Stored] = []
        self.folders: dict[str, list[bytes]] = {}  # other folders: name -> messages
        self._last_uid = 0
        self.commands: list[str] = []  # every command received, tag stripped, password hidden
        self.logins = 0
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Session)
        self._server.imap = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ImapServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, raw: bytes, *, seen: bool = False) -> int:
        """Deliver a message into the folder; returns its UID."""
        data = re.sub(rb"\r?\n", b"\r\n", raw)
        with self.lock:
            uid = max((m.uid for m in self.messages), default=self._last_uid) + 1
            self._last_uid = uid
            self.messages.append(Stored(uid, data, {"\\Seen"} if seen else set()))
        return uid

    def url(self, user: str | None = None, host: str = "127.0.0.1") -> str:
        return f"imap://{user or self.user}@{host}:{self.port}/{self.folder}"

    def unseen(self) -> list[int]:
        with self.lock:
            return [m.uid for m in self.messages if not m.seen]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    imap: ImapServer


class _Session(socketserver.StreamRequestHandler):
    """One client connection: reads tagged commands, answers per RFC 3501."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.imap = self.server.imap
        self.state = "not-authenticated"
        self.read_only = False

    def handle(self) -> None:
        self.send(f"* OK [CAPABILITY {self.imap.capabilities}] test IMAP server ready")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "UID":
                sub, _, args = args.partition(" ")
                command = f"UID {sub.upper()}"
            with self.imap.lock:
                self.imap.commands.append(
                    f"LOGIN {args.split()[0] if args else ''} ***"
                    if command == "LOGIN"
                    else f"{command} {args}".strip()
                )
            handler = getattr(self, "do_" + command.replace(" ", "_"), None)
            if not tag or handler is None:
                self.send(f"{tag or '*'} BAD unknown command")
                continue
            try:
                done = handler(tag, _tokens(args))
            except (ValueError, IndexError):
                self.send(f"{tag} BAD invalid arguments")
                continue
            if done:
                return

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.wfile.write(data + b"\r\n")
        self.wfile.flush()

    # --- any state ---------------------------------------------------------------------------

    def do_CAPABILITY(self, tag: str, args: list[str]) -> None:
        self.send(f"* CAPABILITY {self.imap.capabilities}")
        self.send(f"{tag} OK CAPABILITY completed")

    def do_NOOP(self, tag: str, args: list[str]) -> None:
        self.send(f"{tag} OK NOOP completed")

    def do_LOGOUT(self, tag: str, args: list[str]) -> bool:
        self.send("* BYE logging out")
        self.send(f"{tag} OK LOGOUT completed")
        return True

    # --- not authenticated -------------------------------------------------------------------

    def do_LOGIN(self, tag: str, args: list[str]) -> None:
        if self.state != "not-authenticated":
            self.send(f"{tag} BAD already logged in")
        elif args[:2] == [self.imap.user, self.imap.password]:
            self.state = "authenticated"
            with self.imap.lock:
                self.imap.logins += 1
            self.send(f"{tag} OK [CAPABILITY {self.imap.capabilities}] Logged in")
        else:
            self.send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")

    # --- authenticated -----------------------------------------------------------------------

    def do_SELECT(self, tag: str, args: list[str], *, read_only: bool = False) -> None:
        verb = "EXAMINE" if read_only else "SELECT"
        if self.state == "not-authenticated":
            self.send(f"{tag} BAD log in first")
            return
        if args[0].upper() != self.imap.folder.upper():
            self.state = "authenticated"
            self.send(f"{tag} NO [NONEXISTENT] Mailbox doesn't exist: {args[0]}")
            return
        with self.imap.lock:
            count = len(self.imap.messages)
            unseen = [i for i, m in enumerate(self.imap.messages, 1) if not m.seen]
        self.send(f"* FLAGS ({' '.join(SYSTEM_FLAGS)})")
        self.send(f"* OK [PERMANENTFLAGS ({' '.join(SYSTEM_FLAGS)} \\*)] Flags permitted.")
        self.send(f"* {count} EXISTS")
        self.send("* 0 RECENT")
        if unseen:
            self.send(f"* OK [UNSEEN {unseen[0]}] First unseen.")
        self.send("* OK [UIDVALIDITY 1] UIDs valid")
        self.send(f"* OK [UIDNEXT {count + 1}] Predicted next UID")
        self.state = "selected"
        self.read_only = read_only
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        self.send(f"{tag} OK [{mode}] {verb} completed")

    def do_EXAMINE(self, tag: str, args: list[str]) -> None:
        self.do_SELECT(tag, args, read_only=True)

    # --- selected ----------------------------------------------------------------------------

    def do_CLOSE(self, tag: str, args: list[str]) -> None:
        if self._not_selected(tag):
            return
        self.state = "authenticated"
        self.send(f"{tag} OK CLOSE completed")

    def do_UID_SEARCH(self, tag: str, args: list[str]) -> None:
        if self._not_selected(tag):
            return
        criteria = [a.upper() for a in args]
        with self.imap.lock:
            messages = list(self.imap.messages)
        if criteria == ["UNSEEN"]:
            found = [m.uid for m in messages if not m.seen]
        elif criteria == ["SEEN"]:
            found = [m.uid for m in messages if m.seen]
        elif criteria == ["ALL"]:
            found = [m.uid for m in messages]
        else:
            self.send(f"{tag} BAD unsupported search criteria")
            return
        self.send("* SEARCH" + "".join(f" {uid}" for uid in found))
        self.send(f"{tag} OK UID SEARCH completed")

    def do_UID_FETCH(self, tag: str, args: list[str]) -> None:
        if self._not_selected(tag):
            return
        items = args[1].strip("()").upper().split()
        known = {"BODY.PEEK[]", "BODY[]", "RFC822", "FLAGS", "UID"}
        if not items or not set(items) <= known:
            self.send(f"{tag} BAD unsupported fetch items")
            return
        for seq, message in self._matching(args[0]):
            if not self.read_only and {"BODY[]", "RFC822"} & set(items):
                with self.imap.lock:
                    message.flags.add("\\Seen")
            parts = [f"UID {message.uid}"]
            if "FLAGS" in items:
                parts.append(f"FLAGS ({' '.join(sorted(message.flags))})")
            head = f"* {seq} FETCH ({' '.join(parts)}"
            body_item = next((i for i in items if i != "FLAGS" and i != "UID"), None)
            if body_item is None:
                self.send(head + ")")
                continue
            name = "RFC822" if body_item == "RFC822" else "BODY[]"
            literal = f"{head} {name} {{{len(message.data)}}}".encode()
            self.wfile.write(literal + b"\r\n" + message.data)
            self.send(")")
        self.send(f"{tag} OK UID FETCH completed")

    def do_UID_STORE(self, tag: str, args: list[str]) -> None:
        if self._not_selected(tag):
            return
        if self.read_only:
            self.send(f"{tag} NO mailbox is read-only")
            return
        what = args[1].upper()
        silent = what.endswith(".SILENT")
        what = what.removesuffix(".SILENT")
        flags = {f for f in args[2].strip("()").split() if f}
        if what not in ("+FLAGS", "-FLAGS", "FLAGS"):
            self.send(f"{tag} BAD unsupported store")
            return
        for seq, message in self._matching(args[0]):
            with self.imap.lock:
                if what == "+FLAGS":
                    message.flags |= flags
                elif what == "-FLAGS":
                    message.flags -= flags
                else:
                    message.flags = set(flags)
                now = " ".join(sorted(message.flags))
            if not silent:
                self.send(f"* {seq} FETCH (UID {message.uid} FLAGS ({now}))")
        self.send(f"{tag} OK UID STORE completed")

    def do_CREATE(self, tag: str, args: list[str]) -> None:
        if self.state == "not-authenticated":
            self.send(f"{tag} BAD log in first")
            return
        with self.imap.lock:
            if args[0] in self.imap.folders or args[0].upper() == self.imap.folder.upper():
                self.send(f"{tag} NO [ALREADYEXISTS] Mailbox exists")
                return
            self.imap.folders[args[0]] = []
        self.send(f"{tag} OK CREATE completed")

    def do_UID_COPY(self, tag: str, args: list[str], *, move: bool = False) -> None:
        if self._not_selected(tag):
            return
        with self.imap.lock:
            target = self.imap.folders.get(args[1])
        if target is None:
            self.send(f"{tag} NO [TRYCREATE] Mailbox doesn't exist: {args[1]}")
            return
        for seq, message in reversed(self._matching(args[0])):
            with self.imap.lock:
                target.append(message.data)
                if move:
                    self.imap.messages.remove(message)
            if move:
                self.send(f"* {seq} EXPUNGE")
        self.send(f"{tag} OK UID {'MOVE' if move else 'COPY'} completed")

    def do_UID_MOVE(self, tag: str, args: list[str]) -> None:
        if "MOVE" not in self.imap.capabilities.split():
            self.send(f"{tag} BAD unknown command")
            return
        self.do_UID_COPY(tag, args, move=True)

    def _not_selected(self, tag: str) -> bool:
        if self.state == "selected":
            return False
        self.send(f"{tag} BAD no mailbox selected")
        return True

    def _matching(self, uid_set: str) -> list[tuple[int, Stored]]:
        """(sequence number, message) for each message whose UID is in an IMAP set like 1:3,7."""
        with self.imap.lock:
            messages = list(self.imap.messages)
        top = max((m.uid for m in messages), default=0)
        wanted: set[int] = set()
        for item in uid_set.split(","):
            low, _, high = item.partition(":")
            a = top if low == "*" else int(low)
            b = a if not high else (top if high == "*" else int(high))
            wanted.update(range(min(a, b), max(a, b) + 1))
        return [(seq, m) for seq, m in enumerate(messages, 1) if m.uid in wanted]


def _tokens(args: str) -> list[str]:
    """Split command arguments into atoms, unquoted strings and parenthesised lists."""
    tokens: list[str] = []
    position = 0
    while position < len(args):
        match = _TOKEN.match(args, position)
        if match is None or match.end() == position:
            if args[position:].strip():
                raise ValueError(f"cannot parse {args[position:]!r}")
            break
        quoted, group, atom = match.groups()
        if quoted is not None:
            tokens.append(re.sub(r"\\(.)", r"\1", quoted))
        else:
            tokens.append(group if group is not None else atom)
        position = match.end()
    return tokens

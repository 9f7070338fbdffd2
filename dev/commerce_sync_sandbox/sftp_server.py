"""A small SFTP server (paramiko's server interfaces) for the demo and the tests.

It serves the files under ``root`` to one login (password or public key) on 127.0.0.1. It is
read-only (a supplier's outbox) unless created with ``writable=True`` (a feed target): then it also
opens files for writing (create, truncate, append), makes directories, removes files and renames
them (SFTP ``rename``, which refuses to overwrite, and OpenSSH's ``posix-rename``, which replaces the
target atomically). Every path stays under ``root``: ``..``, absolute paths and symlinks that lead
outside are refused.

It can misbehave on purpose, per file name (a name or an ``fnmatch`` pattern such as
``".google.xml.*.tmp"``, so unpredictable staging names can be targeted):

* ``"truncate"``: ``stat`` announces the full size but reads stop at half (an incomplete transfer);
* ``"grow"``: every ``stat`` reports a larger size and a newer mtime (a file still being written);
* ``"drop"``: a write reaching byte ``fault_at_bytes`` of that file is cut there and the server
  cuts the TCP connection (a network failure mid-upload; the partial file stays, as on a real server);
* ``"full"``: writes reaching byte ``fault_at_bytes`` are cut there and answered with a failure status
  (a full disk; paramiko's pipelined uploads do not raise on it, only a size check notices);
* ``"refuse_rename"``: renaming to or from that name is refused with "permission denied".

Run it with ``python -m commerce_sync_sandbox.sftp_server ROOT`` (prints the port and host key).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import paramiko
from paramiko import ServerInterface, SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface

Fault = Literal["truncate", "grow", "drop", "full", "refuse_rename"]


class _Handle(SFTPHandle):
    def __init__(self, server: SandboxSftpServer, path: Path, file: Any, drop: Callable[[], None]) -> None:
        super().__init__()
        self.server = server
        self.path = path
        self.readfile = file
        self.writefile = file
        self._drop = drop

    def read(self, offset: int, length: int) -> bytes | int:
        if self.server.fault_for(self.path.name) == "truncate":
            limit = self.path.stat().st_size // 2
            length = max(0, min(length, limit - offset))
            if length == 0:
                return b""
        return super().read(offset, length)

    def write(self, offset: int, data: bytes) -> int:
        fault, limit = self.server.fault_for(self.path.name), self.server.fault_at_bytes
        if fault in ("drop", "full") and offset + len(data) >= limit:
            super().write(offset, data[: max(0, limit - offset)])  # the file never grows past the limit
            self.writefile.flush()
            if fault == "full":
                return paramiko.sftp.SFTP_FAILURE  # as a server whose disk is full answers
            self._drop()
            return paramiko.sftp.SFTP_CONNECTION_LOST
        return super().write(offset, data)

    def stat(self) -> SFTPAttributes | int:
        return self.server.attributes(self.path)


class _Sftp(SFTPServerInterface):
    def __init__(
        self,
        server: ServerInterface,
        *args: Any,
        sandbox: SandboxSftpServer,
        transport: paramiko.Transport,
        **kwargs: Any,
    ) -> None:
        super().__init__(server, *args, **kwargs)
        self.sandbox = sandbox
        self.transport = transport

    def _local(self, path: str) -> Path | None:
        root = self.sandbox.root.resolve()
        local = (root / path.lstrip("/")).resolve()
        return local if local == root or root in local.parents else None

    def _drop(self) -> None:
        """Cut the TCP connection under the SSH session, as a network failure would."""
        with contextlib.suppress(OSError):
            self.transport.sock.shutdown(socket.SHUT_RDWR)

    def stat(self, path: str) -> SFTPAttributes | int:
        local = self._local(path)
        if local is None or not local.exists():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        return self.sandbox.attributes(local)

    lstat = stat

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        local = self._local(path)
        if local is None or not local.is_dir():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        listing = []
        for child in sorted(local.iterdir()):
            attributes = self.sandbox.attributes(child)
            attributes.filename = child.name
            listing.append(attributes)
        return listing

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing and not self.sandbox.writable:
            return paramiko.sftp.SFTP_PERMISSION_DENIED  # a supplier's outbox: read-only for us
        local = self._local(path)
        if local is None:
            return paramiko.sftp.SFTP_PERMISSION_DENIED if writing else paramiko.sftp.SFTP_NO_SUCH_FILE
        if not writing:
            if not local.is_file():
                return paramiko.sftp.SFTP_NO_SUCH_FILE
            return _Handle(self.sandbox, local, local.open("rb"), self._drop)
        if local.is_dir():
            return paramiko.sftp.SFTP_FAILURE
        if not local.parent.is_dir():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        try:
            fd = os.open(local, flags | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        # fdopen never truncates (O_TRUNC did, if the client asked); "+" only where the client may read.
        mode = ("a" if flags & os.O_APPEND else "r+" if flags & os.O_RDWR else "w") + "b"
        if flags & os.O_RDWR and flags & os.O_APPEND:
            mode = "a+b"
        return _Handle(self.sandbox, local, os.fdopen(fd, mode), self._drop)

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        local = self._local(path)
        if not self.sandbox.writable or local is None:
            return paramiko.sftp.SFTP_PERMISSION_DENIED
        try:
            local.mkdir()
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return paramiko.sftp.SFTP_OK

    def remove(self, path: str) -> int:
        local = self._local(path)
        if not self.sandbox.writable or local is None:
            return paramiko.sftp.SFTP_PERMISSION_DENIED
        if not local.is_file():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        local.unlink()
        return paramiko.sftp.SFTP_OK

    def _move(self, oldpath: str, newpath: str, *, replace: bool) -> int:
        old, new = self._local(oldpath), self._local(newpath)
        if not self.sandbox.writable or old is None or new is None:
            return paramiko.sftp.SFTP_PERMISSION_DENIED
        if "refuse_rename" in (self.sandbox.fault_for(old.name), self.sandbox.fault_for(new.name)):
            return paramiko.sftp.SFTP_PERMISSION_DENIED
        if not old.exists():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        if new.exists() and not replace:
            return paramiko.sftp.SFTP_FAILURE  # SFTP v3 rename never overwrites
        try:
            os.replace(old, new)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return paramiko.sftp.SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        return self._move(oldpath, newpath, replace=False)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        """Permission bits only (what a feed publish sets); other attributes are ignored."""
        local = self._local(path)
        if not self.sandbox.writable or local is None:
            return paramiko.sftp.SFTP_PERMISSION_DENIED
        if not local.is_file():
            return paramiko.sftp.SFTP_NO_SUCH_FILE
        if attr.st_mode is not None:
            local.chmod(attr.st_mode & 0o777)
        return paramiko.sftp.SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._move(oldpath, newpath, replace=True)


class _Auth(ServerInterface):
    def __init__(self, sandbox: SandboxSftpServer) -> None:
        self.sandbox = sandbox

    def check_auth_password(self, username: str, password: str) -> int:
        ok = username == self.sandbox.login and password == self.sandbox.password
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        allowed = self.sandbox.client_key
        ok = username == self.sandbox.login and allowed is not None and key.get_base64() == allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class SandboxSftpServer:
    """Serve ``root`` over SFTP on 127.0.0.1 (an ephemeral port unless ``port`` is given).

    Attributes:
        host_key: The server's key; ``host_key_line`` is what goes into the connection's extra.
        faults: File name or ``fnmatch`` pattern -> fault (see the module docstring); change it while
            the server runs.
        fault_at_bytes: The file size at which ``"drop"`` and ``"full"`` strike.
        connections: How many SSH connections were accepted (tests check retries with it).
        writable: Whether clients may write, create, remove and rename (off: a read-only outbox).
    """

    def __init__(
        self,
        root: Path,
        login: str = "supplier",
        password: str | None = "sandbox-secret",  # noqa: S107 - sandbox only, like the demo's other secrets
        client_key: paramiko.PKey | None = None,
        port: int = 0,
        *,
        writable: bool = False,
    ) -> None:
        self.root = root
        self.writable = writable
        self.login = login
        self.password = password
        self.client_key = client_key
        self.host_key = paramiko.ECDSAKey.generate()
        self.faults: dict[str, Fault] = {}
        self.fault_at_bytes = 1 << 16
        self.connections = 0
        self._grow: dict[Path, int] = {}
        self._socket = socket.create_server(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def host_key_line(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def fault_for(self, name: str) -> Fault | None:
        """The fault set for this file name (exact name first, then the first matching pattern)."""
        if name in self.faults:
            return self.faults[name]
        return next((fault for pattern, fault in self.faults.items() if fnmatch.fnmatchcase(name, pattern)), None)

    def attributes(self, path: Path) -> SFTPAttributes:
        attributes = SFTPAttributes.from_stat(path.stat())
        if self.fault_for(path.name) == "grow":
            self._grow[path] = self._grow.get(path, 0) + 1
            attributes.st_size = (attributes.st_size or 0) + 100 * self._grow[path]
            attributes.st_mtime = (attributes.st_mtime or 0) + self._grow[path]
        return attributes

    def start(self) -> SandboxSftpServer:
        self._thread = threading.Thread(target=self._serve, name="sandbox-sftp", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        transport = paramiko.Transport(client)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", SFTPServer, _Sftp, sandbox=self, transport=transport)
        try:
            transport.start_server(server=_Auth(self))
            while transport.is_active() and not self._stop.is_set():
                self._stop.wait(0.2)
        except (paramiko.SSHException, OSError, EOFError):
            pass
        finally:
            transport.close()

    def stop(self) -> None:
        self._stop.set()
        self._socket.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxSftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--login", default="supplier")
    parser.add_argument("--password", default="sandbox-secret")
    parser.add_argument("--writable", action="store_true", help="accept uploads (a feed target)")
    args = parser.parse_args()
    server = SandboxSftpServer(args.root, args.login, args.password, port=args.port, writable=args.writable).start()
    print(f"sftp://{args.login}@127.0.0.1:{server.port}/  host key: {server.host_key_line}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

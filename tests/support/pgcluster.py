"""Throwaway PostgreSQL clusters for tests.

A :class:`PgCluster` owns one temporary data directory and one postmaster
process that this Python process started. It never looks at, signals or stops
any other PostgreSQL server (in particular not the machine's own one), so tests
that stop or kill PostgreSQL can use it safely.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import psycopg

__all__ = [
    "PgCluster",
    "PgClusterError",
    "PgNotInstalledError",
    "StopMode",
    "find_pg_bin_dir",
]

StopMode = Literal["smart", "fast", "immediate"]

# The postmaster maps these signals to its three shutdown modes; signalling our
# own child directly avoids pg_ctl having to find (and trust) postmaster.pid.
_STOP_SIGNALS: Final[Mapping[str, signal.Signals]] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

# initdb refuses to run as root, so when we are root every server-side process
# runs as this OS user instead.
_SERVER_OS_USER: Final = "postgres"

# Debian/Ubuntu install each major version side by side here.
_DEBIAN_PG_ROOT: Final = Path("/usr/lib/postgresql")

# Unix-domain socket paths are limited to sizeof(sun_path) - 1 = 107 bytes.
_MAX_SOCKET_PATH: Final = 107

# Log lines after which a failed start is worth retrying: a crashed
# postmaster's orphaned children may still hold the shared memory block or the
# lock file for a moment, and an auto-picked port may have been taken by
# someone else between picking and binding it.
_TRANSIENT_FAILURE: Final = re.compile(
    r"pre-existing shared memory block|lock file \".*\" already exists"
)
_PORT_IN_USE_MARKERS: Final = (
    "Address already in use",
    "could not create any TCP/IP sockets",
)

_MAX_PORT_ATTEMPTS: Final = 5
_LOG_TAIL_LINES: Final = 30

# Clusters not cleaned up yet, for the atexit safety net. Deliberately strong
# references: a forgotten cluster object must not be collected while its
# postmaster still runs.
_LIVE_CLUSTERS: set[PgCluster] = set()


class PgClusterError(RuntimeError):
    """A throwaway cluster could not be initialised, started or stopped."""


class PgNotInstalledError(PgClusterError):
    """No PostgreSQL server binaries (initdb, postgres) were found."""


def find_pg_bin_dir() -> Path | None:
    """Find the directory holding the PostgreSQL server binaries.

    Returns:
        The directory of ``pg_ctl`` on ``PATH`` (symlinks resolved) if it also
        holds ``initdb`` and ``postgres``, else the newest
        ``/usr/lib/postgresql/<version>/bin``, else ``None``.
    """
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        # Resolve first: /usr/local/bin/pg_ctl is often a symlink into the real
        # bin directory, and the unresolved directory may lack initdb/postgres.
        for candidate in (Path(on_path).resolve().parent, Path(on_path).parent):
            if _has_server_binaries(candidate):
                return candidate
    versioned = [d for d in _DEBIAN_PG_ROOT.glob("*/bin") if _has_server_binaries(d)]
    if not versioned:
        return None
    return max(versioned, key=lambda d: _version_key(d.parent.name))


def _has_server_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    # "9.6" < "10" < "15": compare numerically, and push odd names to the bottom.
    if not re.fullmatch(r"\d+(\.\d+)*", name):
        return (-1,)
    return tuple(int(part) for part in name.split("."))


def _free_port() -> int:
    # Let the kernel pick an unused loopback port. Another process may grab it
    # before the postmaster binds it; start() retries with a new port then.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_quote(value: str) -> str:
    # postgresql.conf string literal: single quotes, embedded quotes doubled.
    return "'" + value.replace("'", "''") + "'"


def _child_pids(pid: int) -> list[int]:
    """Return the pids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    children: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # The process exited while we were looking.
        # The command name (field 2) may contain spaces and parentheses, so
        # parse the fields after its closing parenthesis: state, ppid, ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.name))
    return children


def _is_gone(pid: int) -> bool:
    """Tell whether ``pid`` has exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # A zombie has already released its shared memory; it only waits to be
    # reaped by whoever inherited it, which in a container may be never.
    return stat[stat.rfind(")") + 2 :].startswith(("Z", "X"))


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory.

    The cluster listens on 127.0.0.1 only, trusts every local connection as
    user ``postgres`` and runs with ``fsync = off``: it is for tests, not data.
    When this process runs as root, initdb and the server run as the
    ``postgres`` OS user, because initdb and postgres refuse to run as root.

    Example:
        >>> with PgCluster() as cluster:  # doctest: +SKIP
        ...     psycopg.connect(cluster.url()).close()
    """

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        """Describe a cluster; nothing is created until :meth:`init`.

        Args:
            base_dir: Directory in which to create the cluster's temporary
                directory (default: the system temp dir). When running as
                root, the ``postgres`` OS user must be able to traverse it.
            port: TCP port to listen on; ``None`` picks a free one (and picks
                again if it turns out to be taken at start).
            bin_dir: Directory with ``initdb`` and ``postgres``; ``None`` uses
                :func:`find_pg_bin_dir`.

        Raises:
            PgNotInstalledError: If no PostgreSQL server binaries were found.
            PgClusterError: If running as root and there is no ``postgres``
                OS user.
        """
        found = bin_dir if bin_dir is not None else find_pg_bin_dir()
        if found is None:
            raise PgNotInstalledError(
                "no PostgreSQL server binaries found (initdb, postgres): "
                "install postgresql (apt-get install postgresql)"
            )
        self._bin_dir: Path = found
        self._base_dir: Path | None = base_dir
        self._fixed_port: bool = port is not None
        self._port: int = port if port is not None else _free_port()
        self._work_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(_SERVER_OS_USER)
            except KeyError:
                raise PgClusterError(
                    f"running as root needs an OS user {_SERVER_OS_USER!r} to run "
                    "PostgreSQL as (install postgresql, which creates it)"
                ) from None
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
        # Clean up on interpreter exit even if a caller forgets to, so a
        # crashed test run does not leave postmasters behind.
        _LIVE_CLUSTERS.add(self)

    # -- properties --------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port of the server.

        An automatically picked port may still change during the first
        successful :meth:`start` (if it was taken meanwhile), never after.
        """
        return self._port

    @property
    def bin_dir(self) -> Path:
        """Directory holding the PostgreSQL binaries in use."""
        return self._bin_dir

    @property
    def work_dir(self) -> Path:
        """Temporary directory holding data, socket and log (after :meth:`init`)."""
        if self._work_dir is None:
            raise PgClusterError("cluster is not initialised; call init() first")
        return self._work_dir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (after :meth:`init`)."""
        return self.work_dir / "data"

    @property
    def log_path(self) -> Path:
        """File receiving the server's log output (after :meth:`init`)."""
        return self.work_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster started by this object, else ``None``."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    # -- lifecycle ---------------------------------------------------------

    def init(self) -> None:
        """Create the temporary directory and run initdb in it.

        Raises:
            PgClusterError: If the cluster is already initialised or initdb fails.
        """
        if self._work_dir is not None:
            raise PgClusterError(f"cluster already initialised in {self._work_dir}")
        work_dir = Path(tempfile.mkdtemp(prefix="biomem-pg-", dir=self._base_dir)).resolve()
        self._work_dir = work_dir
        if self._uid is not None and self._gid is not None:
            # initdb runs as postgres and must create the data dir in here.
            os.chown(work_dir, self._uid, self._gid)
        result = subprocess.run(
            [
                str(self._bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                # Durability of a throwaway cluster's files is worthless;
                # skipping the final fsync saves seconds per cluster.
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            env=self._child_env(),
            # The caller's cwd may be unreadable for the postgres OS user.
            cwd=self.work_dir,
            # Drop root's supplementary groups too, not just uid and gid.
            user=self._uid,
            group=self._gid,
            extra_groups=None if self._uid is None else [],
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            tail = "\n".join(output[-_LOG_TAIL_LINES:])
            raise PgClusterError(f"initdb failed with exit code {result.returncode}:\n{tail}")
        self._write_config()

    def start(self, timeout_s: float = 30) -> None:
        """Start the server (running :meth:`init` first if needed).

        Waits until a psycopg connection succeeds rather than sleeping a fixed
        time. A no-op if this object's server is already running.

        Args:
            timeout_s: Seconds to wait for the server to accept connections.

        Raises:
            PgClusterError: If the server exits or is not ready in time; the
                message ends with the tail of the server log.
        """
        if self.is_running():
            return
        if self._work_dir is None:
            self.init()
        deadline = time.monotonic() + timeout_s
        port_attempts = 0
        while True:
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            failure = self._wait_ready(deadline)
            if failure is None:
                # Keep the port from now on: after a restart, clients holding
                # url() must reach the same server again.
                self._fixed_port = True
                return
            log_tail = self._log_tail(log_offset)
            retry = False
            if time.monotonic() < deadline:
                if (
                    not self._fixed_port
                    and port_attempts < _MAX_PORT_ATTEMPTS
                    and any(m in log_tail for m in _PORT_IN_USE_MARKERS)
                ):
                    port_attempts += 1
                    self._port = _free_port()
                    retry = True
                elif _TRANSIENT_FAILURE.search(log_tail):
                    time.sleep(0.2)
                    retry = True
            if not retry:
                raise PgClusterError(
                    f"PostgreSQL in {self.data_dir} on port {self._port} {failure}; "
                    f"server log tail:\n{log_tail}"
                )

    def stop(self, mode: StopMode = "fast", timeout_s: float = 60) -> None:
        """Shut the server down and wait for the postmaster to exit.

        A no-op if this object's server is not running. If the postmaster has
        not exited after ``timeout_s`` it is killed.

        Args:
            mode: PostgreSQL shutdown mode: ``smart``, ``fast`` or ``immediate``.
            timeout_s: Seconds to wait for the shutdown to finish.

        Raises:
            ValueError: If ``mode`` is not a shutdown mode.
            PgClusterError: If the postmaster had to be killed.
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"unknown stop mode {mode!r}; use smart, fast or immediate")
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(_STOP_SIGNALS[mode])
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PgClusterError(
                f"PostgreSQL did not stop ({mode}) within {timeout_s}s and was killed"
            ) from None

    def kill(self) -> None:
        """SIGKILL the postmaster this object started, simulating a crash.

        Waits until the postmaster is reaped and its orphaned children (which
        notice the postmaster's death by themselves) have exited, so that a
        following :meth:`start` does not trip over their shared memory.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # Note the children first: once the postmaster is gone they are
        # re-parented and can no longer be told apart from other processes.
        children = _child_pids(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_is_gone(pid) for pid in children):
            time.sleep(0.05)

    def restart(self, mode: StopMode = "fast", timeout_s: float = 30) -> None:
        """Stop the server (if running) and start it again.

        Args:
            mode: Shutdown mode for the stop.
            timeout_s: Seconds to wait for the server to accept connections.
        """
        self.stop(mode)
        self.start(timeout_s=timeout_s)

    def is_running(self) -> bool:
        """Tell whether the postmaster started by this object is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def url(self, dbname: str = "postgres") -> str:
        """Return a libpq URL for ``dbname`` on this cluster.

        Args:
            dbname: Database name (must not need URL escaping).

        Returns:
            ``postgresql://postgres@127.0.0.1:<port>/<dbname>``.
        """
        return f"postgresql://postgres@127.0.0.1:{self._port}/{dbname}"

    def cleanup(self) -> None:
        """Stop the server if running and delete the temporary directory.

        Safe to call more than once.
        """
        _LIVE_CLUSTERS.discard(self)
        try:
            self.stop("fast", timeout_s=30)
        except PgClusterError:
            pass  # It was killed instead, which is fine for a throwaway cluster.
        finally:
            if self._work_dir is not None:
                # Best effort: everything in here is ours and disposable.
                shutil.rmtree(self._work_dir, ignore_errors=True)
                self._work_dir = None

    def __enter__(self) -> Self:
        """Start the cluster (initialising it if needed)."""
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster and delete its files."""
        self.cleanup()

    def __repr__(self) -> str:
        """Show where the cluster lives and whether it runs."""
        state = "running" if self.is_running() else "stopped"
        return f"PgCluster(port={self._port}, work_dir={self._work_dir}, {state})"

    # -- internals ---------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        # PG* variables (PGDATA, PGPORT, ...) from the caller's environment
        # must not redirect initdb or the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # English messages, so the log markers that start() looks for match.
        env["LC_ALL"] = "C"
        return env

    def _write_config(self) -> None:
        socket_dir = str(self.work_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            # Too long for a Unix socket; the tests connect over TCP anyway.
            socket_dir = ""
        settings = {
            # Only loopback: a throwaway trust-auth server must not be reachable.
            "listen_addresses": _conf_quote("127.0.0.1"),
            # Keep the socket and its lock file out of the shared /var/run dir.
            "unix_socket_directories": _conf_quote(socket_dir),
            # Speed over crash safety of the OS; a postgres crash (SIGKILL)
            # still loses no committed data, which chaos tests rely on, so
            # synchronous_commit stays on.
            "fsync": "off",
            "full_page_writes": "off",
        }
        lines = ["", "# biomem throwaway test cluster (tests/support/pgcluster.py)"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        # Appending as root keeps the file owned by postgres.
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n".join(lines) + "\n")

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(self._bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self._port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches pytest, which
                # then stops the server cleanly, instead of hitting it directly.
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                env=self._child_env(),
                cwd=self.work_dir,
                user=self._uid,
                group=self._gid,
                extra_groups=None if self._uid is None else [],
            )

    def _wait_ready(self, deadline: float) -> str | None:
        """Wait until the server accepts connections; return why not, or None."""
        proc = self._proc
        assert proc is not None
        expected_data_dir = str(self.data_dir)
        while True:
            if proc.poll() is not None:
                return f"exited with code {proc.returncode} during startup"
            try:
                with psycopg.connect(self.url(), connect_timeout=2, autocommit=True) as conn:
                    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
                # Make sure we reached our server and not some other one that
                # happens to listen on the same port.
                if row is not None and row[0] == expected_data_dir:
                    return None
            except psycopg.OperationalError:
                pass  # Not accepting connections yet ("starting up", refused).
            if time.monotonic() >= deadline:
                self._abort_start()
                return "did not accept connections in time"
            time.sleep(0.05)

    def _abort_start(self) -> None:
        # A server that never became ready is ours; shut it down hard.
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        lines = text.strip().splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"


@atexit.register
def _cleanup_live_clusters() -> None:
    # Last resort for clusters whose owner never called cleanup(); each one is
    # a postmaster we started, never anybody else's.
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.cleanup()

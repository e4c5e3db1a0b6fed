"""A throwaway MySQL server (MariaDB, from the distribution's packages) on loopback, for the tests.

mariadbd refuses to run as root, so under root it runs as the `mysql` system user (which the
Debian package creates) in a temporary directory it owns; it runs without grant tables, so any
user connects from loopback without a password."""

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

SERVER_USER = "mysql"
DATABASE = "trainmedic_test"
TOOLS = ("mariadb-install-db", "mariadbd", "mariadb")


def _tool(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


def unavailable_reason():
    """Why no server can be started here, or None when one can."""
    if importlib.util.find_spec("pymysql") is None:
        return "pymysql is not installed (pip install 'trainmedic[tune]')"
    missing = [t for t in TOOLS if _tool(t) is None]
    if missing:
        return f"no MariaDB server binaries ({', '.join(missing)}); apt-get install mariadb-server"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run mariadbd as"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MySQLServer:
    """mariadb-install-db + mariadbd on 127.0.0.1 in a fresh directory; stop() kills it and
    deletes the directory."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="trainmedic-mysql-")
        self.data = os.path.join(self.root, "data")
        self.socket = os.path.join(self.root, "mysqld.sock")
        self.port = _free_port()
        self.proc = None
        self.user = ["--user=" + SERVER_USER] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVER_USER)

    def _log(self):
        try:
            with open(os.path.join(self.root, "server.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def start(self):
        """Starts the server and returns the URL of an empty database on it."""
        done = subprocess.run([_tool("mariadb-install-db"), "--no-defaults", f"--datadir={self.data}",
                               "--auth-root-authentication-method=normal", "--skip-test-db", *self.user],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        self.proc = subprocess.Popen(
            [_tool("mariadbd"), "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-grant-tables",
             f"--pid-file={os.path.join(self.root, 'mysqld.pid')}", f"--log-error={os.path.join(self.root, 'server.log')}",
             "--innodb-buffer-pool-size=32M", "--max-connections=100", *self.user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import pymysql
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root")
                break
            except pymysql.err.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start:\n{self._log()}") from None
                time.sleep(0.2)
        with conn:
            conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        return f"mysql://root@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

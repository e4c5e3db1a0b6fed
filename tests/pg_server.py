"""A throwaway PostgreSQL server from the distribution's packages, on loopback, for the tests.

initdb refuses to run as root, so under root the server runs as the `postgres` system user (which
the Debian package creates) in a temporary directory it owns; loopback connections are trusted."""

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

SERVER_USER = "postgres"
DATABASE = "trainmedic_test"


def find_bin_dir():
    """The directory holding initdb and pg_ctl (PATH first, then /usr/lib/postgresql/*/bin), or None."""
    on_path = shutil.which("initdb")
    candidates = [os.path.dirname(os.path.realpath(on_path))] if on_path else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for bin_dir in candidates:
        if all(os.access(os.path.join(bin_dir, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "createdb")):
            return bin_dir
    return None


def _version(bin_dir):
    number = os.path.basename(os.path.dirname(bin_dir))
    return int(number) if number.isdigit() else 0


def unavailable_reason():
    """Why no server can be started here, or None when one can."""
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed (pip install 'trainmedic[tune]')"
    if find_bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl start on 127.0.0.1 in a fresh directory; stop() kills it and deletes the directory."""

    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.root = tempfile.mkdtemp(prefix="trainmedic-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self.started = False
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVER_USER)

    def _run(self, tool, *args):
        command = [os.path.join(self.bin_dir, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}{self._log()}")

    def _log(self):
        try:
            with open(os.path.join(self.root, "server.log")) as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        """Starts the server and returns the URL of an empty database on it."""
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=60"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w", "-t", "30",
                  "-o", options, "start")
        self.started = True
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self):
        try:                            # a server that started late (pg_ctl -w timed out) too
            if self.started or os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

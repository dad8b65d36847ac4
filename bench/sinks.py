"""Local SMTP sinks for the benchmark, and a throwaway CA for the StartTLS one.

- Plain: Postfix's `smtp-sink` (Debian's postfix package), one event-driven process that
  accepts and discards every mail.
- StartTLS: Debian's `smtp-sink` cannot do TLS, so a private Postfix instance (its own
  main.cf/master.cf, queue and logs under a temp dir, on /dev/shm when there is one so the
  queue's fsyncs cost nothing) whose smtpd offers StartTLS with a throwaway certificate for
  127.0.0.1 and whose only transport is `discard`. /etc/postfix is never touched.

Both listen on 127.0.0.1 only, on a free port; `stop()` ends what was started, by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The tests' helpers, shared rather than copied: the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.smtp_fixtures import HOST, TestCA, free_port

SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"


def wait_for_banner(port: int, timeout: float = 15.0) -> str:
    """Block until an SMTP server on `port` greets; its 220 line."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                banner = sock.recv(512).decode(errors="replace").strip()
                if banner.startswith("220"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"QUIT\r\n")
                    return banner
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SMTP server answered on {HOST}:{port} in {timeout} s")
        time.sleep(0.05)


def throwaway_ca(directory: Path) -> TestCA:
    """The tests' throwaway CA (tests/smtp_fixtures.py): its "valid" leaf, for 127.0.0.1 and
    localhost, is the sink's certificate. `bundle_file` is the system bundle plus this CA: put
    it in SSL_CERT_FILE so that `ssl.create_default_context()` (the project's TLS context,
    Django's SMTP backend) trusts the sink while still verifying it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA(directory)
    ca.leaf_files["valid"][1].chmod(0o644)  # Postfix's smtpd reads it after dropping privileges
    return ca


class SmtpSink:
    """Postfix's smtp-sink on a free port: accepts and discards every mail (no TLS)."""

    name = "smtp-sink (Postfix 3.7, plain)"
    tls = False

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if not Path(SMTP_SINK).exists():
            raise RuntimeError(f"{SMTP_SINK} is missing: `make postfix` installs Debian's postfix")
        command = [SMTP_SINK, "-4"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # required when started as root
        command += [f"{HOST}:{self.port}", "1024"]
        self.process = subprocess.Popen(  # noqa: S603 (fixed program, our arguments)
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_banner(self.port)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_MAIN_CF = """\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = sink.bench.localhost
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_reject_unlisted_recipient = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = discard:bench sink
relay_transport = discard:bench sink
message_size_limit = 52428800
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
in_flow_delay = 0
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 0
smtpd_tls_session_cache_database =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""


class PostfixTlsSink:
    """A private Postfix instance offering StartTLS; every mail goes to `discard`."""

    name = "Postfix 3.7 smtpd (StartTLS) → discard, queue on tmpfs"
    tls = True

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.port = free_port()
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 (tmpfs, own dir)
        self.root = Path(tempfile.mkdtemp(prefix="directo-bench-postfix-", dir=base))
        self.root.chmod(0o755)  # the master refuses a 700 parent
        self.etc = self.root / "etc"
        self.started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603
            [POSTFIX, "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start(self) -> None:
        if not Path(POSTFIX).exists():
            raise RuntimeError(f"{POSTFIX} is missing: `make postfix` installs Debian's postfix")
        self.etc.mkdir()
        for folder in ("queue", "data"):
            (self.root / folder).mkdir(mode=0o755)
        shutil.chown(self.root / "data", user="postfix")
        values = {
            "host": HOST,
            "port": self.port,
            "etc": self.etc,
            "root": self.root,
            "cert": self.ca.leaf_files["valid"][0],
            "key": self.ca.leaf_files["valid"][1],
        }
        (self.etc / "main.cf").write_text(_MAIN_CF.format(**values))
        (self.etc / "master.cf").write_text(_MASTER_CF.format(**values))
        # Postfix ignores a configuration file changed within the last second.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.etc / name, (past, past))
        self.started = True
        try:
            self._postfix("start")
        except subprocess.CalledProcessError as error:
            raise RuntimeError(
                f"the private Postfix did not start:\n{error.stdout}{error.stderr}\n"
                f"{self.maillog_tail()}"
            ) from None
        wait_for_banner(self.port)

    def maillog_tail(self, lines: int = 20) -> str:
        log = self.root / "maillog"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def master_pid(self) -> int | None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None

    def pids(self) -> list[int]:
        pid = self.master_pid()
        return [pid] if pid else []

    def stop(self) -> None:
        if self.started:
            self.started = False
            pid = self.master_pid()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._postfix("stop", check=False)
            if pid is not None:  # the master and its children: make sure they are gone
                deadline = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

"""A private Postfix instance on loopback that writes real bounces (DSNs), for the bounce tests.

A pytest plugin (registered in tests/conftest.py). Debian's postfix package, installed with
"No configuration" by scripts/ensure_postfix.sh, is used as a set of binaries only: each
instance has its own main.cf, master.cf, transport map, queue and log under a temp dir, and
listens on 127.0.0.1 only. /etc/postfix is never written and the system instance never started.

Where mail goes is decided by the transport map, by recipient domain:
- `bad.test` -> `error:5.1.1 user unknown`: Postfix itself bounces the recipient;
- routes a test adds, e.g. `{"event.test": "smtp:[127.0.0.1]:PORT"}` (a local listener);
- anything else -> the `discard` transport: accepted and dropped, nothing leaves the machine.
The DSN Postfix writes goes to the envelope sender, so a sender at a routed domain
(`bounces+1-abc@event.test`) has it delivered to that domain's listener.

tests/test_postfix_fixtures.py shows the fixtures in use; /work/shared/TESTING-NOTES.md has the
background (verified facts and pitfalls).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from tests.smtp_fixtures import HOST, SMTPTestServer, TestCA, _die_with_parent, free_port
from tests.smtp_fixtures import _start_server as _start_smtp_server
from tests.smtp_fixtures import _started_servers as _started_smtp_servers

POSTFIX = "/usr/sbin/postfix"
POSTSUPER = "/usr/sbin/postsuper"
POSTQUEUE = "/usr/sbin/postqueue"
MAIL_OWNER = "postfix"  # created by Debian's package, as is the group below
SETGID_GROUP = "postdrop"

DEFAULT_ROUTES = {"bad.test": "error:5.1.1 user unknown"}
DISCARD = "discard:delivered to the test sink"

# Queue timings, so that retries and "delayed" DSNs happen within seconds, not hours (the
# defaults are 300 s, 300 s, 4000 s and no delay warning): the queue manager scans the deferred
# queue every second and retries a deferred message 1-2 s later; a message older than 2 s
# (Postfix counts whole seconds) gets a "delayed" DSN at its next attempt. Against a server
# answering 451 that DSN arrived ~1.05 s after the mail was handed in, every run here.
QUEUE_TIMINGS = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "delay_warning_time": "2s",
}

# The master only: children are spawned by it with the service names below.
_MASTER_CF = """\
# service  type  private unpriv chroot wakeup maxproc command
{host}:{port} inet n   -       n      -      -       smtpd
pickup     unix  n       -       n      60     1       pickup
cleanup    unix  n       -       n      -      0       cleanup
qmgr       unix  n       -       n      300    1       qmgr
rewrite    unix  -       -       n      -      -       trivial-rewrite
bounce     unix  -       -       n      -      0       bounce
defer      unix  -       -       n      -      0       bounce
trace      unix  -       -       n      -      0       bounce
verify     unix  -       -       n      -      1       verify
flush      unix  n       -       n      1000?  0       flush
proxymap   unix  -       -       n      -      -       proxymap
showq      unix  n       -       n      -      -       showq
smtp       unix  -       -       n      -      -       smtp
relay      unix  -       -       n      -      -       smtp
error      unix  -       -       n      -      -       error
retry      unix  -       -       n      -      -       error
discard    unix  -       -       n      -      -       discard
anvil      unix  -       -       n      -      1       anvil
scache     unix  -       -       n      -      1       scache
# Without postlogd nothing is logged at all: Postfix writes to stderr only on a terminal.
postlog    unix-dgram n  -       n      -      1       postlogd
"""

# Postfix's own delay notice, but in seconds: the built-in one says "for more than
# $delay_warning_time_hours hour(s)", which rounds 2 s down to 0 and logs three warnings a DSN.
_BOUNCE_TEMPLATES = """\
delay_template = <<EOF
Charset: us-ascii
From: MAILER-DAEMON (Mail Delivery System)
Subject: Delayed Mail (still being retried)
Postmaster-Subject: Postmaster Warning: Delayed Mail

This is the mail system at host $myhostname.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than $delay_warning_time_seconds second(s).
It will be retried until it is $maximal_queue_lifetime_days day(s) old.

                   The mail system
EOF
"""


def postfix_unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None if it can."""
    if not Path(POSTFIX).is_file():
        return f"{POSTFIX} is missing: run scripts/ensure_postfix.sh (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a Postfix master must be started as root"
    try:
        pwd.getpwnam(MAIL_OWNER)
        grp.getgrnam(SETGID_GROUP)
    except KeyError as missing:
        return f"the {missing} user/group of Debian's postfix package is missing"
    return None


class PostfixInstance:
    """One Postfix master with its own configuration, queue and log under `dir`.

    host/port: where its smtpd listens (127.0.0.1, a free port). `routes`: domain -> transport
    (Postfix transport(5) syntax, e.g. "smtp:[127.0.0.1]:2525" or "error:5.1.1 user unknown");
    any other domain goes to `default_transport`, which discards by default.
    """

    def __init__(
        self,
        routes: dict[str, str] | None = None,
        default_transport: str = DISCARD,
        myhostname: str = "postfix.directo.test",
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self.routes = dict(routes or {})
        self.default_transport = default_transport
        self.myhostname = myhostname
        self.extra_config = dict(extra_config or {})
        self.host = HOST
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"<PostfixInstance {self.host}:{self.port} {self.dir}>"

    # --- paths ---------------------------------------------------------------------------------
    @property
    def etc(self) -> Path:
        return self._dir / "etc"

    @property
    def queue_dir(self) -> Path:
        return self._dir / "queue"

    @property
    def maillog_path(self) -> Path:
        return self._dir / "maillog"

    @property
    def _dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("the Postfix instance was not started")
        return self.dir

    # --- life cycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Write the configuration, start the master, wait for smtpd to answer (~0.25 s)."""
        if self.process is not None:
            raise RuntimeError(f"{self!r} is already running")
        # Not under pytest's basetemp: that is mode 700, and Postfix's unprivileged processes
        # (user postfix) must reach the queue and data directories below it.
        self.dir = Path(tempfile.mkdtemp(prefix="directo-postfix-"))
        self.dir.chmod(0o755)
        self.etc.mkdir()
        self.queue_dir.mkdir(mode=0o755)
        data = self._dir / "data"
        data.mkdir(mode=0o700)
        os.chown(data, pwd.getpwnam(MAIL_OWNER).pw_uid, -1)
        self.port = free_port()
        self._write(self.etc / "main.cf", self._main_cf())
        self._write(self.etc / "master.cf", _MASTER_CF.format(host=self.host, port=self.port))
        self._write(self.etc / "bounce.cf", _BOUNCE_TEMPLATES)
        self._write_transport()

        # `postfix check` creates the queue directories with Postfix's owners and modes, and
        # fails on a configuration error. The master then runs in the foreground (-d) as our
        # child, rather than daemonised by `postfix start`: it gets SIGTERM if pytest dies, even
        # by SIGKILL, and on SIGTERM the master stops its whole process group.
        self._postfix("check")
        with (self._dir / "master.out").open("ab") as out:
            self.process = subprocess.Popen(
                ["/usr/lib/postfix/sbin/master", "-d", "-c", str(self.etc)],
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while not self._greets():
            if self.process.poll() is not None or time.monotonic() > deadline:
                status = self.process.poll()
                self.stop(keep_dir=True)
                raise RuntimeError(
                    f"Postfix in {self.dir} did not start (master exit status {status}):\n"
                    f"{self._diagnostics()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0, keep_dir: bool = False) -> None:
        """SIGTERM to the master (it stops its children), then check that none is left."""
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.dir is None:
            return
        # Children get the master's SIGTERM and exit within milliseconds; anything still alive
        # (not a zombie waiting for its new parent to reap it) after that is a leak.
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            raise RuntimeError(f"Postfix processes {left} outlived their master in {self.dir}")
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def processes(self) -> list[int]:
        """PIDs of live (not zombie) processes of this instance.

        Found by working directory: the master and every child chdir to the queue directory.
        `pgrep -f DIR` finds nothing: the command lines do not name the configuration.
        """
        if self.dir is None:
            return []
        queue = str(self.queue_dir)
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cwd = os.readlink(proc / "cwd")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # gone meanwhile, or not ours to look at
                continue
            if (cwd == queue or cwd.startswith(queue + "/")) and state != "Z":
                found.append(int(proc.name))
        return found

    @property
    def master_pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- routes --------------------------------------------------------------------------------
    def set_routes(self, routes: dict[str, str | None]) -> None:
        """Add or change routes (domain -> transport); a None transport removes the route.

        Routes stay for the rest of the session: pick domains of your own. Takes ~0.1 s: the
        transport file is rewritten and Postfix reloaded; returns once the reload is logged.
        """
        for domain, transport in routes.items():
            if transport is None:
                self.routes.pop(domain, None)
            else:
                self.routes[domain] = transport
        self._write_transport()
        if self.running:
            self.reload()

    def reload(self, timeout: float = 10.0) -> None:
        """`postfix reload`: re-read main.cf, master.cf and the transport map."""
        mark = self.log_position()
        self._postfix("reload")
        # The master logs this after it restarted its services; old idle children exit at once.
        self.wait_for_log(r"reload -- version", timeout=timeout, since=mark)

    # --- queue ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Retry every deferred message now (`postqueue -f`)."""
        self._run([POSTQUEUE, "-c", str(self.etc), "-f"])

    def queue_ids(self) -> list[str]:
        """IDs of the messages in the queue (any state: incoming, active, deferred, hold)."""
        out = self._run([POSTQUEUE, "-c", str(self.etc), "-j"]).stdout
        return re.findall(r'"queue_id"\s*:\s*"([0-9A-F]+)"', out)

    def queue_is_empty(self) -> bool:
        return not self.queue_ids()

    def wait_for_empty_queue(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Postfix queue not empty after {timeout} s: {self.queue_ids()}\n"
                    f"{self.maillog_tail()}"
                )
            time.sleep(0.05)

    def clear_queue(self) -> None:
        """Delete every queued message (`postsuper -d ALL`), e.g. one still being retried."""
        self._run([POSTSUPER, "-c", str(self.etc), "-d", "ALL"])

    # --- sending -------------------------------------------------------------------------------
    def send(
        self,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
        mail_options: tuple[str, ...] = (),
        rcpt_options: tuple[str, ...] = (),
    ) -> dict:
        """Hand a message to this Postfix's smtpd; what smtplib reports as refused (normally {})."""
        with smtplib.SMTP(self.host, self.port, local_hostname="client.test", timeout=10) as smtp:
            return smtp.send_message(
                message, sender, recipients, list(mail_options), list(rcpt_options)
            )

    # --- log -----------------------------------------------------------------------------------
    def maillog_text(self, since: int = 0) -> str:
        """The instance's log (from the byte offset `since`, a log_position())."""
        try:
            with self.maillog_path.open("rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def maillog_tail(self, lines: int = 40) -> str:
        return "\n".join(self.maillog_text().splitlines()[-lines:])

    def log_position(self) -> int:
        """A mark for wait_for_log(since=...): only what is logged after it counts."""
        return self.maillog_path.stat().st_size if self.maillog_path.exists() else 0

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """Block until the maillog (from `since`) matches the regex `pattern`; the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.maillog_text(since))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the Postfix log:\n{self.maillog_tail()}")
            time.sleep(0.05)

    # --- internals -----------------------------------------------------------------------------
    def _main_cf(self) -> str:
        d = self._dir
        config = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(d / "data"),
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "myhostname": self.myhostname,  # not "localhost": aiosmtpd greets with that (loop)
            "mydomain": "directo.test",
            "myorigin": "$myhostname",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # Nothing is local, nothing is relayed by default: every domain is "remote", and
            # its transport is the map's or the default (discard).
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": "",
            "transport_maps": f"texthash:{self.etc / 'transport'}",
            "default_transport": self.default_transport,
            "relay_transport": self.default_transport,
            "local_transport": self.default_transport,
            "virtual_transport": self.default_transport,
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "",
            # Or error: destinations are refused at RCPT time, and no DSN is ever written.
            "smtpd_reject_unlisted_recipient": "no",
            "smtpd_reject_unlisted_sender": "no",
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # A refused or silent listener must not hold a test for Postfix's default 30-300 s.
            "smtp_connect_timeout": "3s",
            "smtp_helo_timeout": "5s",
            "biff": "no",
            "bounce_template_file": str(d / "etc" / "bounce.cf"),
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(d),
            **QUEUE_TIMINGS,
            **self.extra_config,
        }
        return "".join(f"{key} = {value}\n" for key, value in config.items())

    def _write_transport(self) -> None:
        if self.dir is None:
            return
        lines = [f"{domain}\t{transport}\n" for domain, transport in sorted(self.routes.items())]
        self._write(self.etc / "transport", "".join(lines))

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        # Postfix distrusts a file modified under ~1 s ago (it may still be being written) and
        # retries for seconds: date it back.
        past = time.time() - 10
        os.utime(tmp, (past, past))
        tmp.replace(path)

    def _greets(self) -> bool:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=2) as smtp:
                return smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def _postfix(self, command: str) -> None:
        self._run([POSTFIX, "-c", str(self.etc), command])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n{self._diagnostics()}"
            )
        return result

    def _diagnostics(self) -> str:
        try:
            out = (self._dir / "master.out").read_text("utf-8", "replace")
        except OSError:
            out = ""
        return f"master output:\n{out}\nmaillog:\n{self.maillog_tail()}"


# ------------------------------------------------------------------------------
# Reading DSNs
# ------------------------------------------------------------------------------
def delivery_status(dsn: Message) -> tuple[Message, list[Message]]:
    """The per-message and per-recipient fields of a multipart/report DSN (RFC 3464).

    Header-like objects: `fields["Status"]`, `fields["Action"]`, ...
    """
    for part in dsn.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            return blocks[0], blocks[1:]
    raise AssertionError(f"no message/delivery-status part in:\n{dsn}")


# ------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------
_started: list[PostfixInstance] = []


@pytest.fixture(scope="session")
def postfix() -> Iterator[PostfixInstance]:
    """A private Postfix on 127.0.0.1 (`postfix.host`, `postfix.port`), for the session.

    Session-scoped although a start costs only ~0.25 s: the bounce tests share one, and each test
    starts with an empty queue (see `_reset_postfix`). Routes: `bad.test` bounces (5.1.1), other
    domains are discarded; `postfix.set_routes({...})` adds routes for the rest of the session.
    Without Postfix (or root) this skips, except under CI=true, where it fails.
    """
    if reason := postfix_unavailable():
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the Postfix bounce tests: {reason}", pytrace=False)
        pytest.skip(reason)
    instance = PostfixInstance(routes=DEFAULT_ROUTES)
    instance.start()
    _started.append(instance)
    yield instance
    _started.remove(instance)
    instance.stop()


@pytest.fixture(autouse=True)
def _reset_postfix(request: pytest.FixtureRequest) -> None:
    """A test using `postfix` starts with an empty queue: no retries or DSNs from a former test."""
    if "postfix" not in request.fixturenames:
        return
    for instance in _started:
        if instance.running and not instance.queue_is_empty():
            instance.clear_queue()


@pytest.fixture
def smtp_listener(test_ca: TestCA) -> Iterator[Callable[[str], SMTPTestServer]]:
    """Start plain aiosmtpd servers on 127.0.0.1 for this test: `smtp_listener("name")`.

    The servers of tests/smtp_fixtures.py (scriptable: `server.script("RCPT", "550 ...",
    times=None)`; `server.wait_for(1)`); stopped when the test ends.
    """
    servers: list[SMTPTestServer] = []

    def start(name: str) -> SMTPTestServer:
        server = _start_smtp_server(name, test_ca)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.controller.stop()
        _started_smtp_servers.remove(server)

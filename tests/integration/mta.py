"""A private Postfix instance and a private Dovecot IMAP server on 127.0.0.1, for the bounce tests.

Neither touches the machine's own mail system: each gets its own config, queue and data folders
under a temporary directory and listens on a free port; ``stop()`` ends them. Postfix runs no service
chrooted (a private queue has no copy of /etc to chroot into).

Readers live at ``readers.test`` (virtual mailboxes; addresses not listed are "User unknown", so
Postfix accepts them at RCPT and sends a DSN afterwards, as a relay in front of the digest does).
Return paths live at ``bounces.test``: handed to ``digest bounces ingest`` through a pipe transport
(``bounce_to="pipe"``) or kept in a maildir that Dovecot serves (``bounce_to="maildir"``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

READERS_DOMAIN = "readers.test"
BOUNCE_DOMAIN = "bounces.test"
PIPE_USER = "digest"  # the pipe transport never runs as root; .ci/run creates this user

# The services every private Postfix here runs (none chrooted: a private queue has no copy of /etc).
MASTER_CF_COMMON = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

MASTER_CF = MASTER_CF_COMMON + """\
virtual unix - n n - - virtual
digestbounce unix - n n - 4 pipe
  flags=Rq user={pipe_user} argv={digest} --config {config} bounces ingest --recipient ${{original_recipient}}
"""

# What every private Postfix here has: its own queue and log, 127.0.0.1 only, relaying for it alone.
MAIN_CF_COMMON = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
local_recipient_maps =
alias_maps =
alias_database =
notify_classes =
biff = no
smtputf8_enable = no
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
"""

MAIN_CF = MAIN_CF_COMMON + """\
smtpd_reject_unlisted_recipient = no
virtual_mailbox_domains = {virtual_domains}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_mailbox_base = {mail}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
recipient_delimiter = +
transport_maps = texthash:{etc}/transport
default_transport = error:5.4.4 this test relay delivers nowhere else
relay_transport = error:5.4.4 this test relay delivers nowhere else
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C {environment}
export_environment = TZ MAIL_CONFIG LANG {exported}
"""

# A Postfix that accepts every message and throws it away (the benchmarks' MTA).
DISCARD_MAIN_CF = MAIN_CF_COMMON + """\
default_transport = discard:bench
relay_transport = discard:bench
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def postfix_missing() -> str | None:
    """None if a private Postfix can run here, else why not (the reason a test skips with)."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "Debian's postfix is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    return None


def pipe_user_missing(digest_command: str) -> str | None:
    """None if the pipe user exists and can run ``digest_command``, else why not."""
    try:
        pwd.getpwnam(PIPE_USER)
    except KeyError:
        return f"no user {PIPE_USER!r} for the pipe transport (.ci/run creates it)"
    proc = subprocess.run(["runuser", "-u", PIPE_USER, "--", digest_command, "--version"], capture_output=True,
                          timeout=60)
    if proc.returncode != 0:
        return (f"user {PIPE_USER!r} cannot run {digest_command} ({proc.stderr.decode(errors='replace').strip()}); "
                ".ci/run grants it access to the interpreter")
    return None


def private_dir(prefix: str) -> Path:
    """A fresh directory the pipe user and Postfix's daemons can traverse (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    return base


class Postfix:
    """One private Postfix: ``port`` takes SMTP from the digest; ``readers`` have mailboxes; mail for
    ``refused`` (readers too) fails with the given reply through Postfix's error transport (a DSN with
    that status and no SMTP reply, as a relay reports a refusal it was given without a reason)."""

    def __init__(self, base: Path, readers: Iterable[str], bounce_to: str, digest_command: str = "",
                 digest_config: Path | None = None, environment: dict[str, str] | None = None,
                 refused: dict[str, str] | None = None) -> None:
        self.base = base
        self.etc, self.queue, self.data, self.mail = (base / n for n in ("etc", "queue", "data", "mail"))
        for folder in (self.etc, self.queue, self.data, self.mail):
            folder.mkdir()
        nobody = pwd.getpwnam("nobody")
        postfix = pwd.getpwnam("postfix")
        os.chown(self.data, postfix.pw_uid, postfix.pw_gid)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        self.port = free_port()
        env = environment or {}
        domains = READERS_DOMAIN if bounce_to == "pipe" else f"{READERS_DOMAIN}, {BOUNCE_DOMAIN}"
        (self.etc / "main.cf").write_text(MAIN_CF.format(
            hostname="relay.digest.test", domain="digest.test",
            queue=self.queue, data=self.data, etc=self.etc, mail=self.mail, base=base, uid=nobody.pw_uid,
            gid=nobody.pw_gid, virtual_domains=domains,
            environment=" ".join(f"{k}={v}" for k, v in env.items()), exported=" ".join(env)))
        (self.etc / "master.cf").write_text(MASTER_CF.format(
            listen=f"127.0.0.1:{self.port}", pipe_user=PIPE_USER, digest=digest_command or "/bin/false",
            config=digest_config or "/dev/null"))
        boxes = [f"{r} {READERS_DOMAIN}/{r.split('@')[0]}/" for r in readers]
        if bounce_to == "maildir":
            boxes.append(f"bounces@{BOUNCE_DOMAIN} bouncebox/")
        (self.etc / "vmailbox").write_text("\n".join(boxes) + "\n")
        routes = [f"{BOUNCE_DOMAIN} digestbounce:"] if bounce_to == "pipe" else []
        routes += [f"{address} error:{reply}" for address, reply in (refused or {}).items()]
        (self.etc / "transport").write_text("".join(f"{line}\n" for line in routes))

    @property
    def bounce_box(self) -> Path:
        return self.mail / "bouncebox"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        proc = self._postfix("start")
        if proc.returncode != 0:
            raise RuntimeError(f"postfix start failed: {proc.stderr.strip()}\n{self.log()}")
        wait_port(self.port)

    def stop(self) -> None:
        self._postfix("stop")
        if self._postfix("status").returncode == 0:
            self._postfix("abort")

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def delivered(self, reader: str) -> int:
        box = self.mail / READERS_DOMAIN / reader.split("@")[0] / "new"
        return len(list(box.iterdir())) if box.exists() else 0

    def queue_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            folder = self.queue / sub
            if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
                return False
        return True


class Dovecot:
    """A private Dovecot IMAP server (plain IMAP on 127.0.0.1) serving one maildir to one user."""

    def __init__(self, base: Path, maildir: Path, user: str, password: str, port: int = 0) -> None:
        self.base = base
        self.port = port or free_port()
        nobody = pwd.getpwnam("nobody")
        for name in ("run", "home"):
            (base / name).mkdir()
        os.chown(base / "home", nobody.pw_uid, nobody.pw_gid)
        (base / "users").write_text(f"{user}:{{PLAIN}}{password}\n")
        self.config = base / "dovecot.conf"
        self.config.write_text(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{maildir}
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={base}/home
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def dovecot_missing() -> str | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return "Debian's dovecot-imapd is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "a private Dovecot needs root"
    return None


class DiscardPostfix:
    """A private Postfix on 127.0.0.1 that accepts every message and discards it (the benchmarks' MTA)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.etc, self.queue, self.data = (base / n for n in ("etc", "queue", "data"))
        for folder in (self.etc, self.queue, self.data):
            folder.mkdir()
        postfix = pwd.getpwnam("postfix")
        os.chown(self.data, postfix.pw_uid, postfix.pw_gid)
        self.port = free_port()
        (self.etc / "main.cf").write_text(DISCARD_MAIN_CF.format(
            hostname="mta.bench.test", domain="bench.test", queue=self.queue, data=self.data, base=base))
        (self.etc / "master.cf").write_text(MASTER_CF_COMMON.format(listen=f"127.0.0.1:{self.port}"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        wait_port(self.port, 30.0)

    def stop(self) -> None:
        self._postfix("stop")
        if self._postfix("status").returncode == 0:
            self._postfix("abort")

    def version(self) -> str:
        return subprocess.run(["postconf", "-c", str(self.etc), "-h", "mail_version"], capture_output=True,
                              text=True, timeout=30).stdout.strip()

    def queued(self) -> int:
        return sum(1 for sub in ("maildrop", "incoming", "active", "deferred") if (self.queue / sub).exists()
                   for path in (self.queue / sub).rglob("*") if path.is_file())

    def drain(self, seconds: float = 120.0) -> None:
        """Wait until the queue is empty (the discard transport has caught up)."""
        deadline = time.monotonic() + seconds
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.2)

"""The deploy lock of an app on a host: one release or rollback at a time.

Shared by the modules that start or end a run: djdeploy_lock (take, release, inspect),
djdeploy_layout (takes it at the start of a release, in the same call as the layout) and
djdeploy_switch (takes it for a rollback, releases it when the host's switch is done).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_LOCK_DIR = "/run/djdeploy/locks"

SINCE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
APP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
OWNER_FIELDS = ("who", "since", "action", "run", "token")


class LockError(Exception):
    """The lock cannot be used (bad name, unsafe directory, I/O error)."""


def read_boot_time(proc_stat: Path = Path("/proc/stat")) -> float | None:
    """The host's boot time (epoch seconds) from /proc/stat, or None when unknown."""
    try:
        for line in proc_stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def format_since(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(SINCE_FORMAT)


def parse_since(text: str) -> float | None:
    try:
        return datetime.strptime(text, SINCE_FORMAT).replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """What the owner file records (no pid: the run spans many processes and hosts)."""

    token: str
    who: str = "unknown"
    action: str = ""
    run: str = ""


@dataclass
class Found:
    """The lock as read from disk."""

    held: bool
    holder: dict[str, str] = field(default_factory=dict)
    stale: bool = False
    stale_reason: str = ""


@dataclass
class Result:
    """The outcome of one call; failed results carry the message for the user."""

    path: str
    held: bool
    holder: dict[str, str]
    stale: bool = False
    stale_reason: str = ""
    failed: bool = False
    msg: str = ""
    acquired: bool | None = None
    released: bool | None = None
    broken_holder: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            # Not "path": AnsibleModule would add that file's attributes to the result.
            "lock_path": self.path,
            "held": self.held,
            "holder": self.holder,
            "stale": self.stale,
            "stale_reason": self.stale_reason,
            "msg": self.msg,
        }
        if self.acquired is not None:
            data["acquired"] = self.acquired
            data["broken_holder"] = self.broken_holder or {}
        if self.released is not None:
            data["released"] = self.released
        return data


class DeployLock:
    """The deploy lock of one app in one directory; the clock and boot time are injectable."""

    def __init__(
        self,
        lock_dir: Path,
        app: str,
        *,
        host: str | None = None,
        clock: Callable[[], float] = time.time,
        boot_time: Callable[[], float | None] = read_boot_time,
        stale_after: float | None = None,
    ) -> None:
        if not APP_PATTERN.match(app):
            raise LockError(f"release: invalid app name for the deploy lock: {app!r}")
        self.lock_dir = lock_dir
        self.app = app
        self.host = host or socket.gethostname()
        self.clock = clock
        self.boot_time = boot_time
        self.stale_after = stale_after
        self.path = lock_dir / f"{app}.lock"

    # Reading ---------------------------------------------------------------------------

    def ensure_dir(self) -> None:
        """Create the lock directory (0700, ours) or refuse one that is not safe to use."""
        try:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.lock_dir.lstat()
        except OSError as exc:
            raise LockError(
                f"release: cannot create the lock directory {self.lock_dir}: {exc}"
            ) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise LockError(f"release: the lock directory {self.lock_dir} is not a directory")
        if info.st_uid != os.geteuid():
            raise LockError(
                f"release: the lock directory {self.lock_dir} belongs to uid {info.st_uid}, "
                f"not {os.geteuid()}; remove it and run again"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            self.lock_dir.chmod(0o700)

    def _read(self, path: Path) -> tuple[dict[str, str], float] | None:
        """The owner and the age reference of the lock at path; None when there is none."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockError(f"release: cannot read the deploy lock {path}: {exc}") from exc
        holder: dict[str, str] = {}
        if stat.S_ISREG(info.st_mode):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd) as owner:
                    data = json.load(owner)
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict):
                holder = {k: str(data[k]) for k in OWNER_FIELDS if data.get(k) is not None}
        since = parse_since(holder.get("since", ""))
        return holder, since if since is not None else info.st_mtime

    def inspect(self) -> Found:
        read = self._read(self.path)
        if read is None:
            return Found(held=False)
        holder, since = read
        found = Found(held=True, holder=holder)
        boot = self.boot_time()
        if boot is not None and since < boot:
            found.stale = True
            found.stale_reason = f"it was taken before {self.host} booted at {format_since(boot)}"
        elif self.stale_after is not None and self.clock() - since > self.stale_after:
            found.stale = True
            found.stale_reason = f"it is older than {self.stale_after:g} seconds"
        return found

    def refusal(self, found: Found) -> str:
        holder = found.holder
        message = (
            f"release: {self.app} on {self.host} is locked by "
            f"{holder.get('who', 'an unknown run')} since {holder.get('since', 'an unknown time')} "
            f"({holder.get('action', '?')} {holder.get('run', '')}). Wait for that run to end; "
            "if it died, break the lock with -e release_break_lock=true."
        )
        if found.stale:
            message += f" The lock looks stale: {found.stale_reason}."
        return message

    # Changing --------------------------------------------------------------------------

    def _remove(self, path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LockError(f"release: cannot remove the deploy lock {path}: {exc}") from exc

    def _create(self, owner: Owner) -> bool:
        """Create the lock with its owner in one step; False when a lock already exists."""
        content = {
            "who": owner.who,
            "since": format_since(self.clock()),
            "action": owner.action,
            "run": owner.run,
            "token": owner.token,
        }
        temporary = self.lock_dir / f".{self.app}.lock.{os.getpid()}.{time.monotonic_ns()}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(content) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, self.path)
            except FileExistsError:
                return False
        except OSError as exc:
            raise LockError(f"release: cannot create the deploy lock {self.path}: {exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def acquire(
        self, owner: Owner, *, break_lock: bool = False, check_mode: bool = False
    ) -> Result:
        if not owner.token:
            raise LockError("release: taking the deploy lock needs the run's token")
        if not check_mode:
            self.ensure_dir()
        broken: dict[str, str] = {}
        # Twice at most: a lock broken or taken by another run between reading and creating.
        for _attempt in range(2):
            found = self.inspect()
            if found.held and found.holder.get("token") == owner.token:
                return self.report(found, acquired=True, msg="this run holds the lock already")
            if found.held and not break_lock:
                return self.report(found, failed=True, acquired=False, msg=self.refusal(found))
            if found.held:
                broken = found.holder
                if not check_mode:
                    self._remove(self.path)
            if check_mode:
                msg = "check mode: the lock would be taken"
                if broken:
                    msg += f" after breaking the lock of {broken.get('who', 'an unknown run')}"
                return Result(
                    path=str(self.path),
                    held=True,
                    holder=self._holder(owner),
                    stale=found.stale,
                    stale_reason=found.stale_reason,
                    msg=msg,
                    acquired=True,
                    broken_holder=broken,
                )
            if self._create(owner):
                msg = "lock taken"
                if broken:
                    msg += (
                        f" after breaking the lock of {broken.get('who', 'an unknown run')} "
                        f"since {broken.get('since', 'an unknown time')}"
                    )
                result = self.report(self.inspect(), acquired=True, msg=msg)
                result.broken_holder = broken
                result.stale, result.stale_reason = found.stale, found.stale_reason
                return result
        found = self.inspect()
        return self.report(found, failed=True, acquired=False, msg=self.refusal(found))

    def release(self, token: str, *, force: bool = False, check_mode: bool = False) -> Result:
        found = self.inspect()
        if not found.held:
            return self.report(found, released=False, msg="no lock to release")
        if not force and (not token or found.holder.get("token") != token):
            msg = f"the lock belongs to another run ({found.holder.get('who', 'unknown')}); left"
            return self.report(found, released=False, msg=msg)
        if check_mode:
            return Result(
                path=str(self.path),
                held=False,
                holder={},
                released=True,
                msg="check mode: the lock would be released",
            )
        if force:
            self._remove(self.path)
        elif not self._take_out(token):
            found = self.inspect()
            return self.report(found, released=False, msg="the lock changed hands; left")
        return self.report(self.inspect(), released=True, msg="lock released")

    def _take_out(self, token: str) -> bool:
        """Remove the lock if it still carries token (moved aside first, so never another's)."""
        aside = self.lock_dir / f".{self.app}.lock.releasing.{os.getpid()}.{time.monotonic_ns()}"
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise LockError(f"release: cannot release the deploy lock {self.path}: {exc}") from exc
        read = self._read(aside)
        if read is not None and read[0].get("token") != token:
            # Another run took the lock since it was read: put it back.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            self._remove(aside)
            return False
        self._remove(aside)
        return True

    def _holder(self, owner: Owner) -> dict[str, str]:
        return {
            "who": owner.who,
            "since": format_since(self.clock()),
            "action": owner.action,
            "run": owner.run,
            "token": owner.token,
        }

    def report(self, found: Found, **fields: Any) -> Result:
        return Result(
            path=str(self.path),
            held=found.held,
            holder=found.holder,
            stale=found.stale,
            stale_reason=found.stale_reason,
            **fields,
        )


def run(params: dict[str, Any], check_mode: bool, lock: DeployLock | None = None) -> Result:
    """Carry out one call of the module with its parameters."""
    if lock is None:
        stale_after = params.get("stale_after")
        lock = DeployLock(
            Path(params["lock_dir"]),
            params["app"],
            host=params.get("host"),
            stale_after=float(stale_after) if stale_after is not None else None,
        )
    state = params.get("state", "inspected")
    if state == "acquired":
        owner = Owner(
            token=params.get("token") or "",
            who=params.get("who") or "unknown",
            action=params.get("action") or "",
            run=params.get("run") or "",
        )
        return lock.acquire(owner, break_lock=bool(params.get("break_lock")), check_mode=check_mode)
    if state == "released":
        return lock.release(
            params.get("token") or "", force=bool(params.get("force")), check_mode=check_mode
        )
    found = lock.inspect()
    return lock.report(found, msg="held" if found.held else "not held")


# The ``lock`` option of the modules that take or release the lock as part of their work
# (djdeploy_layout, djdeploy_switch): one dict, the same keys as djdeploy_lock's options.
LOCK_OPTION_SPEC: dict[str, Any] = {
    "type": "dict",
    "options": {
        "app": {"type": "str", "required": True},
        "token": {"type": "str", "required": True, "no_log": False},
        "who": {"type": "str", "default": "unknown"},
        "action": {"type": "str", "default": ""},
        "run": {"type": "str", "default": ""},
        "host": {"type": "str"},
        "break_lock": {"type": "bool", "default": False},
        "lock_dir": {"type": "path", "default": DEFAULT_LOCK_DIR},
    },
}


def lock_from_option(option: Mapping[str, Any]) -> tuple[DeployLock, Owner]:
    """The lock and this run's owner described by a module's ``lock`` option."""
    lock = DeployLock(
        Path(option.get("lock_dir") or DEFAULT_LOCK_DIR), option["app"], host=option.get("host")
    )
    owner = Owner(
        token=option.get("token") or "",
        who=option.get("who") or "unknown",
        action=option.get("action") or "",
        run=option.get("run") or "",
    )
    return lock, owner


class LockRefusedError(LockError):
    """Another run holds the lock; result says whose (its msg names the holder)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.msg)
        self.result = result


def take_for_run(
    lock: DeployLock, owner: Owner, *, break_lock: bool = False, check_mode: bool = False
) -> tuple[Result, list[str]]:
    """Take the lock for a run as part of a module's work (djdeploy_layout, djdeploy_switch):
    the result and the warnings to show (a broken lock names whose it was). A run that holds
    the lock already keeps it; another run's lock raises LockRefusedError."""
    taken = lock.acquire(owner, break_lock=break_lock, check_mode=check_mode)
    if taken.failed:
        raise LockRefusedError(taken)
    warnings = [f"release: {lock.host}: {taken.msg}"] if taken.broken_holder else []
    return taken, warnings

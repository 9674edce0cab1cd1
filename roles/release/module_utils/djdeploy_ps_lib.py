"""What an app runs on one host, read-only (`djdeploy ps`, playbooks/ps.yml).

Per host: the live release, the web units (each color's socket and service, which color is
live), the live color's answer to the health check on its own socket, every instance of the
app's processes (the units the release switch wrote, found by their marker) with the release
it runs, and the schedules' timers with their last and next run. A worker-only host (no web
tier: ``PsConfig.web`` false) shows "processes only" instead of the colors and the health.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# run(argv) -> (rc, stdout, stderr); http_get(socket, path, headers, timeout) -> status
Runner = Callable[[list[str]], tuple[int, str, str]]
HttpGet = Callable[[str, str, dict[str, str], float], int]

COLORS = ("blue", "green")
UNIT_PROPERTIES = "ActiveState,SubState,NRestarts,ActiveEnterTimestamp,MainPID"
TIMER_PROPERTIES = "ActiveState,SubState,NextElapseUSecRealtime,LastTriggerUSec"
# The health of a worker-only host (no web tier to ask).
PROCESSES_ONLY = "processes only"


@dataclass
class PsConfig:
    """Where the app lives on the host (the module's options)."""

    app: str
    app_root: Path
    socket_dir: Path
    socket_name: str
    health_path: str
    health_host: str
    # False: a worker-only host (no gunicorn colors, no health check).
    web: bool = True


def show(run: Runner, units: list[str], properties: str) -> dict[str, dict[str, str]]:
    """systemctl show of several units in one call: their properties by unit (a unit systemd
    does not know has ActiveState inactive and LoadState not-found)."""
    if not units:
        return {}
    rc, out, _ = run(["systemctl", "show", f"--property=Id,LoadState,{properties}", *units])
    if rc != 0:
        return {u: {} for u in units}
    found: dict[str, dict[str, str]] = {}
    for block, unit in zip(out.split("\n\n"), units, strict=False):
        values = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        found[unit] = values
    return {u: found.get(u, {}) for u in units}


def _state(values: dict[str, str]) -> str:
    if not values or values.get("LoadState") == "not-found":
        return "absent"
    return f"{values.get('ActiveState', '?')}/{values.get('SubState', '?')}"


def _since(values: dict[str, str]) -> str:
    stamp = values.get("ActiveEnterTimestamp", "")
    return stamp if stamp and stamp != "n/a" else ""


def _time(value: str) -> str:
    return value if value and value not in ("n/a", "0") else ""


def _link(path: Path) -> str:
    try:
        return path.readlink().name if path.is_symlink() else ""
    except OSError:
        return ""


def _live_color(app_root: Path) -> str:
    try:
        color = (app_root / "live-color").read_text().strip()
    except OSError:
        return ""
    return color if color in COLORS else ""


def health(cfg: PsConfig, color: str, http_get: HttpGet) -> str:
    """The live color's answer to the health path on its own socket: a status or the error."""
    if not color:
        return "no live color"
    socket_path = str(cfg.socket_dir / cfg.socket_name.replace("{color}", color))
    headers = {"Host": cfg.health_host, "X-Forwarded-Proto": "https"}
    try:
        return str(http_get(socket_path, cfg.health_path, headers, 5.0))
    except OSError as exc:
        return f"unreachable: {exc}"


def status(
    cfg: PsConfig,
    live: dict[str, Any],
    processes: dict[str, Path],
    schedules: dict[str, Path],
    run: Runner,
    http_get: HttpGet,
) -> dict[str, Any]:
    """The host's status: live release, web colors, health, processes, timers, and lines."""
    colors: list[dict[str, Any]] = []
    if cfg.web:
        color = _live_color(cfg.app_root)
        web_units = [f"{cfg.app}@{c}.{kind}" for c in COLORS for kind in ("socket", "service")]
        web = show(run, web_units, UNIT_PROPERTIES)
        colors = [
            {
                "color": c,
                "live": c == color,
                "socket": _state(web[f"{cfg.app}@{c}.socket"]),
                "service": _state(web[f"{cfg.app}@{c}.service"]),
                "since": _since(web[f"{cfg.app}@{c}.service"]),
            }
            for c in COLORS
        ]
        answer = health(cfg, color, http_get)
    else:
        color, answer = "", PROCESSES_ONLY

    instances: list[str] = []
    for name in sorted(processes):
        pattern = f"{cfg.app}-{name}@*.service"
        rc, out, _ = run(
            [
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--type=service",
                pattern,
            ]
        )
        listed = sorted({line.split()[0] for line in out.splitlines() if line.strip()})
        instances += listed if rc == 0 else []
    shown = show(run, instances, UNIT_PROPERTIES)
    code = _link(cfg.app_root / "processes")
    procs: list[dict[str, Any]] = [
        {
            "unit": unit,
            "process": unit[len(cfg.app) + 1 :].partition("@")[0],
            "state": _state(shown[unit]),
            "restarts": int(shown[unit].get("NRestarts") or 0),
            "since": _since(shown[unit]),
            "release": code,
        }
        for unit in instances
    ]
    timer_units = [f"{cfg.app}-{name}.timer" for name in sorted(schedules)]
    timers_shown = show(run, timer_units, TIMER_PROPERTIES)
    timers: list[dict[str, Any]] = [
        {
            "timer": unit,
            "schedule": unit[len(cfg.app) + 1 : -len(".timer")],
            "state": _state(timers_shown[unit]),
            "next": _time(timers_shown[unit].get("NextElapseUSecRealtime", "")),
            "last": _time(timers_shown[unit].get("LastTriggerUSec", "")),
        }
        for unit in timer_units
    ]
    release = str(live.get("id") or "")
    lines = [
        f"release {release or '(none live)'}, live color {color or '-'}, health {answer}"
        if cfg.web
        else f"release {release or '(none live)'}, {PROCESSES_ONLY} (no web tier on this host)"
    ]
    for c in colors:
        mark = "*" if c["live"] else " "
        since = f" since {c['since']}" if c["since"] and c["service"].startswith("active") else ""
        lines.append(f"{mark} web.{c['color']}: {c['service']} (socket {c['socket']}){since}")
    for p in procs:
        extra = f", {p['restarts']} restart(s)" if p["restarts"] else ""
        lines.append(f"  {p['unit']}: {p['state']} on {p['release'] or '?'}{extra}")
    for t in timers:
        lines.append(
            f"  {t['timer']}: {t['state']}, next {t['next'] or '-'}, last {t['last'] or 'never'}"
        )
    return {
        "release": release,
        "commit": str(live.get("commit") or ""),
        "live_color": color,
        "health": answer,
        "web": colors,
        "processes": procs,
        "timers": timers,
        "lines": lines,
    }

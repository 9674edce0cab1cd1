"""The summary that ends every release and rollback: one block per run, one line per host."""

from __future__ import annotations

from typing import Any

# The only variables read (reading all of a host's variables would template every one of them):
# the run's state and the switch's outcome (docs/ARCHITECTURE.md, "The run's state") and when
# the run started.
KEYS = ("release_state", "release_outcome", "djdeploy_run_started")


def _pick(variables: Any) -> dict[str, Any]:
    """One host's commit and live record (release_state), target, batch and switch report
    (release_outcome) and the run's start time, as one flat dict."""
    picked = {key: variables[key] for key in KEYS if key in variables}
    state = picked.pop("release_state", None) or {}
    outcome = picked.pop("release_outcome", None) or {}
    return {**state, **outcome, **picked}


def _host_line(name: str, facts: dict[str, Any]) -> str:
    report = facts.get("switch") or {}
    if not report or report.get("skipped") or "steps" not in report:
        live = (facts.get("live") or {}).get("id", "") or "nothing"
        return f"{name}: unchanged, serving {live}"
    steps = ", ".join(f"{s['step']} {s['seconds']:.1f}" for s in report["steps"])
    if report.get("failed"):
        return f"{name}: FAILED switching to {report.get('release', '?')}: {steps}"
    previous = report.get("previous_release") or "none"
    if report.get("web") is False:
        # A worker-only host: its processes moved, no color.
        return (
            f"{name}: {report['release']}, processes only (was {previous}),"
            f" host work {report['seconds']:.1f} s ({steps})"
        ) + _build_part(facts.get("build") or {})
    old = report.get("old_color") or "none"
    return (
        f"{name}: {report['release']} on {report['live_color']} (was {previous} on {old}),"
        f" host work {report['seconds']:.1f} s ({steps})"
    ) + _build_part(facts.get("build") or {})


def _build_part(build: dict[str, Any]) -> str:
    """The build of this run on the host (the build module's report), when it built one:
    its time and the install step's, with the installer, or that the venv was reused."""
    if "steps" not in build or "seconds" not in build or "plan" in build:  # plan: check mode
        return ""
    if build.get("venv_reused"):
        return f", build {build['seconds']:.1f} s (venv reused)"
    install = next((s["seconds"] for s in build["steps"] if s.get("step") == "install"), None)
    if install is None:
        return f", build {build['seconds']:.1f} s"
    installer = (build.get("project") or {}).get("installer") or "?"
    return f", build {build['seconds']:.1f} s (install {install:.1f} s with {installer})"


def release_summary(
    hostvars: dict[str, Any],
    hosts: list[str],
    *,
    app: str,
    action: str,
    url: str,
    now: float,
) -> list[str]:
    """Lines of the summary: the run, the batches, then one line per host.

    hostvars maps each host to its variables, of which three are read: ``release_state`` (the
    run's state: ``commit``, the commit released, ``live``, the record of the release that was
    live, and ``build``, the build module's report when the run built on the host),
    ``release_outcome`` (set by the switch: ``switch``, the switch module's report,
    skipped when the host needed no switch; ``target``, the release it serves; ``batch``, the
    hosts switched together) and ``djdeploy_run_started`` (epoch seconds when the run's
    preflight started).
    """
    facts = {h: _pick(hostvars[h]) if h in hostvars else {} for h in hosts}
    started = [float(f.get("djdeploy_run_started") or 0) for f in facts.values()]
    started = [t for t in started if t > 0]
    took = f"{now - min(started):.1f} s" if started else "unknown time"
    targets = [f.get("target", "") for f in facts.values() if f.get("target")]
    release = targets[0] if targets else "nothing"
    commit = next((f["commit"] for f in facts.values() if f.get("commit")), "")
    switched = [h for h in hosts if "steps" in (facts[h].get("switch") or {})]
    batches: list[list[str]] = []
    for host in hosts:
        batch = list(facts[host].get("batch") or [host])
        if batch not in batches:
            batches.append(batch)
    lines = [
        f"{action} of {app}: {release}"
        + (f" (commit {commit[:12]})" if commit else "")
        + f", {len(switched)} of {len(hosts)} host(s) switched, {took}, {url}",
        "batches: " + " | ".join(", ".join(b) for b in batches),
    ]
    lines += [_host_line(h, facts[h]) for h in hosts]
    return lines


def release_report(
    hostvars: dict[str, Any],
    hosts: list[str],
    *,
    app: str,
    action: str,
    url: str,
    now: float,
) -> dict[str, Any]:
    """The run as data (what the summary says, for CI and make bench): the summary's lines and,
    per host, the commit, the release it serves, its batch, the build's report and the switch
    module's report (each step with its seconds and the epoch second it began at). Secrets are
    not in these variables."""
    facts = {h: _pick(hostvars[h]) if h in hostvars else {} for h in hosts}
    return {
        "app": app,
        "action": action,
        "url": url,
        "finished_epoch": round(now, 3),
        "summary": release_summary(hostvars, hosts, app=app, action=action, url=url, now=now),
        "hosts": {
            host: {
                "commit": f.get("commit", ""),
                "target": f.get("target", ""),
                "batch": list(f.get("batch") or []),
                "started_epoch": float(f.get("djdeploy_run_started") or 0),
                "build": f.get("build") or {},
                "switch": f.get("switch") or {},
            }
            for host, f in facts.items()
        },
    }


class FilterModule:
    """Jinja2 filters of the djdeploy playbooks."""

    def filters(self) -> dict[str, Any]:
        return {
            "djdeploy_release_summary": release_summary,
            "djdeploy_release_report": release_report,
        }

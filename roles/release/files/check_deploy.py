# Run by `<app>-manage shell -c` in the new release during the build: Django's own
# `check --deploy --fail-level WARNING`, with the check IDs the inventory accepts
# (DJDEPLOY_CHECK_ACCEPT, comma separated) silenced for this run only. Everything else at
# WARNING or above fails the build with Django's message.
# With DJDEPLOY_COLLECTSTATIC=1 it runs collectstatic first, as `manage.py collectstatic
# --noinput` would (its staticfiles checks included), and prints "djdeploy: collectstatic done
# in <seconds> s" once it is done: one Django start-up for both (djdeploy_build).
import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

if os.environ.get("DJDEPLOY_COLLECTSTATIC") == "1":
    import time

    from django.core.management.base import CommandError

    began = time.monotonic()
    try:
        call_command("collectstatic", interactive=False, verbosity=1, skip_checks=False)
    except CommandError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"djdeploy: collectstatic done in {time.monotonic() - began:.3f} s", flush=True)

accepted = [i.strip() for i in os.environ.get("DJDEPLOY_CHECK_ACCEPT", "").split(",") if i.strip()]
settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, *accepted]
try:
    call_command("check", deploy=True, fail_level="WARNING")
except SystemCheckError as error:
    knob = os.environ.get("DJDEPLOY_CHECK_KNOB", "the accepted check IDs")
    print(
        f"{error}\nFix the settings, or accept a check by its ID in {knob} "
        f"(accepted now: {accepted or 'none'}).",
        file=sys.stderr,
    )
    sys.exit(1)
if accepted:
    print(f"Accepted check IDs (silenced for this check only): {', '.join(accepted)}")

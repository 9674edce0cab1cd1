# Run by `<app>-manage shell -c` in the new release during the build: Django's own
# `check --deploy --fail-level WARNING`, with the check IDs the inventory accepts
# (DJDEPLOY_CHECK_ACCEPT, comma separated) silenced for this run only. Everything else at
# WARNING or above fails the build with Django's message.
import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

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

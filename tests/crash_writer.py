"""Run a `dangjian-qa` command that stops dead at a chosen moment of saving the index.

    python -m tests.crash_writer MOMENT MARKER CLI_ARGS...

MOMENT is where the save stops: `staged` (the new version folder is complete but still named
.staging-*), `before-current` (the version is in place, CURRENT still names the old one) or
`after-current` (CURRENT names the new version, old ones not yet pruned). There the process writes
MARKER and sleeps, for test_update_crash.py to kill it with SIGKILL.
"""

import os
import sys
import time
from pathlib import Path

import service.index


def stop_here(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(600)


def arm(moment: str, marker: Path) -> None:
    if moment == "staged":
        rename = Path.rename

        def rename_after_stop(self: Path, target: Path) -> Path:
            if self.name.startswith(".staging-"):
                stop_here(marker)
            return rename(self, target)

        Path.rename = rename_after_stop  # type: ignore[method-assign]
    elif moment == "before-current":
        replace = os.replace

        def replace_after_stop(source: Path, target: Path) -> None:
            if Path(target).name == "CURRENT":
                stop_here(marker)
            replace(source, target)

        os.replace = replace_after_stop  # service.atomic calls os.replace to switch CURRENT
    elif moment == "after-current":
        service.index.prune_versions = lambda *args, **kwargs: stop_here(marker)
    else:
        raise SystemExit(f"unknown moment {moment!r}")


if __name__ == "__main__":
    from service.cli import main

    arm(sys.argv[1], Path(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))

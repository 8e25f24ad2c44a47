"""The Makefile's set-up: a failed Chromium install is retried on the next `make`, never stamped as done."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.skipif(os.geteuid() != 0, reason="the Makefile only runs apt-get as root")
def test_a_failed_chromium_install_is_tried_again_on_the_next_make(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    # apt-get that fails as it does while another process holds its lock; no chromium on this PATH.
    stub = bin_dir / "apt-get"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexit 100\n")
    stub.chmod(0o755)
    (bin_dir / "id").symlink_to(shutil.which("id"))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    for attempt in (1, 2):
        done = subprocess.run([shutil.which("make"), "-s", "-C", str(ROOT), "browser"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr  # set-up goes on without the browser...
        assert "tried again on the next make" in done.stdout
        assert log.read_text().splitlines().count("update -q") == attempt  # ...and tries again each time
    assert "browser" in (ROOT / "Makefile").read_text().split("install:")[1].splitlines()[0]


def test_make_test_runs_the_slow_tests_too():
    """`slow` only lets a developer leave them out (`make test-fast`); CI's `make test` runs every test."""
    recipes = (ROOT / "Makefile").read_text().split("\ntest: install\n")[1].split("\n\n")[0]
    assert recipes.strip() == "$(PY) -m pytest"
    assert "make test" in (ROOT / ".ci" / "run").read_text()

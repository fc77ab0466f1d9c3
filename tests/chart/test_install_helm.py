"""scripts/install-helm.sh: the pinned helm that `make install` puts in .tools/bin."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helm_chart import REPO

SCRIPT = REPO / "scripts" / "install-helm.sh"
TOOLS_BIN = REPO / ".tools" / "bin"


def _pinned(name: str) -> str:
    match = re.search(rf'^{name}="([^"]+)"', SCRIPT.read_text(), flags=re.MULTILINE)
    assert match, f"{SCRIPT} pins no {name}"
    return match.group(1)


def test_usage_error_names_the_argument() -> None:
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "usage:" in result.stderr
    assert "DEST_DIR" in result.stderr


def test_installed_helm_is_the_pinned_version() -> None:
    helm = TOOLS_BIN / "helm"
    assert helm.is_file(), f"{helm} is missing: run `make install` (scripts/install-helm.sh .tools/bin)"
    version = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert version == _pinned("HELM_VERSION")
    assert _pinned("HELM_VERSION").startswith("v4.")


def test_second_run_is_a_silent_no_op(tmp_path: Path) -> None:
    """Already installed at the pinned versions: nothing is downloaded (the download path prints)."""
    for tool in ("helm", "kubectl"):
        assert (TOOLS_BIN / tool).is_file(), f"{TOOLS_BIN / tool} is missing: run `make install`"
        (tmp_path / tool).symlink_to(TOOLS_BIN / tool)
    result = subprocess.run(
        [str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "fetching" not in result.stderr

"""tests/e2e/versions.env is the one place the e2e tool versions live; everything else reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_config import E2E_DIR, REPO_ROOT, VERSIONS, VERSIONS_FILE, read_env_file

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
SEMVER = re.compile(r"^v\d+\.\d+\.\d+$")
VERSION_LIKE = re.compile(r"\bv\d+\.\d+\.\d+\b|kindest/node:|prometheus/prometheus:")
REQUIRED = (
    "KIND_VERSION",
    "KIND_NODE_IMAGE",
    "HELM_VERSION",
    "KUBECTL_VERSION",
    "PROMETHEUS_IMAGE",
    "KIND_CLUSTER_NAME",
    "OPERATOR_IMAGE",
    "MODEL_SERVER_IMAGE",
    "OPERATOR_NAMESPACE",
    "HELM_RELEASE",
    "E2E_NAMESPACE",
    "MONITORING_NAMESPACE",
)


def test_versions_file_sets_every_pin_and_name() -> None:
    missing = [key for key in REQUIRED if not VERSIONS.get(key)]
    assert not missing, f"{VERSIONS_FILE} lacks {missing}"
    for key in ("KIND_VERSION", "HELM_VERSION", "KUBECTL_VERSION"):
        assert SEMVER.match(VERSIONS[key]), f"{key}={VERSIONS[key]} is not an exact vX.Y.Z pin"


def test_kind_node_image_is_pinned_by_digest_and_matches_kubectl_minor() -> None:
    """kind supports only the node images of its own release notes, and says to pin them by digest."""
    image = VERSIONS["KIND_NODE_IMAGE"]
    match = re.fullmatch(r"kindest/node:(v\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", image)
    assert match, f"KIND_NODE_IMAGE={image} must be kindest/node:vX.Y.Z@sha256:<64 hex>"
    kubectl_minor = VERSIONS["KUBECTL_VERSION"].rsplit(".", 1)[0]
    assert match[1] == kubectl_minor, f"node {match[1]} and kubectl {kubectl_minor} should be the same minor"


def test_images_built_for_kind_are_never_tagged_latest() -> None:
    """A ``latest`` tag makes Kubernetes default to imagePullPolicy Always: kind's loaded image is skipped."""
    for key in ("OPERATOR_IMAGE", "MODEL_SERVER_IMAGE"):
        repository, _, tag = VERSIONS[key].rpartition(":")
        assert repository, f"{key}={VERSIONS[key]} has no repository"
        assert tag not in ("", "latest"), f"{key}={VERSIONS[key]} needs an explicit tag other than latest"
    assert re.fullmatch(r"[\w./-]+:v\d+\.\d+\.\d+", VERSIONS["PROMETHEUS_IMAGE"]), VERSIONS[
        "PROMETHEUS_IMAGE"
    ]


def test_helm_and_kubectl_pins_match_what_make_install_installs() -> None:
    """`make install` runs scripts/install-helm.sh with its own pins: the e2e pins must be the same."""
    script = (REPO_ROOT / "scripts" / "install-helm.sh").read_text()
    for key in ("HELM_VERSION", "KUBECTL_VERSION"):
        match = re.search(rf'^{key}="?([^"\s]+)"?', script, re.MULTILINE)
        assert match, f"scripts/install-helm.sh no longer sets {key}"
        assert match[1] == VERSIONS[key], (
            f"scripts/install-helm.sh pins {key}={match[1]}, tests/e2e/versions.env {VERSIONS[key]}"
        )


def pinned_files() -> list[Path]:
    """Every file of the e2e setup and CI other than versions.env itself."""
    files = [p for p in E2E_DIR.iterdir() if p.is_file() and p.suffix in {".sh", ".yaml", ".yml", ".py"}]
    return sorted(files + list(WORKFLOWS.glob("*.yml")))


@pytest.mark.parametrize("path", pinned_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_version_is_written_outside_versions_env(path: Path) -> None:
    hits = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if VERSION_LIKE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not hits, f"{path.name} pins a version itself; move it to versions.env:\n" + "\n".join(hits)


@pytest.mark.parametrize("script", ["up.sh", "down.sh", "install-tools.sh"])
def test_scripts_read_versions_env(script: str) -> None:
    text = (E2E_DIR / script).read_text()
    assert re.search(r'^source "\$HERE/versions\.env"$', text, re.MULTILINE), (
        f"{script} must source versions.env"
    )


def test_e2e_workflow_reads_versions_env() -> None:
    text = (WORKFLOWS / "e2e.yml").read_text()
    assert "tests/e2e/versions.env" in text
    assert "GITHUB_ENV" in text
    assert "tests/e2e/install-tools.sh" in text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("KIND_VERSION = v1\n", "expected KEY=VALUE"),
        ("kind_version=v1\n", "upper-case key"),
        ('KIND_VERSION="v1"\n', "unquoted value"),
        ("KIND_VERSION=$(curl x)\n", "expected KEY=VALUE"),
        ("A=1\nA=2\n", "A is set twice"),
    ],
)
def test_env_file_reader_names_the_bad_line(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "versions.env"
    path.write_text("# comment\n\n" + content)
    with pytest.raises(ValueError, match=re.escape(problem)) as error:
        read_env_file(path)
    assert f"{path}:" in str(error.value)


def test_env_file_reader_reads_comments_blank_lines_and_values(tmp_path: Path) -> None:
    path = tmp_path / "versions.env"
    path.write_text("# pins\n\nKIND_VERSION=v0.1.2\nIMAGE=repo/x:tag@sha256:ab\n")
    assert read_env_file(path) == {"KIND_VERSION": "v0.1.2", "IMAGE": "repo/x:tag@sha256:ab"}

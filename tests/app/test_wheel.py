"""The installed command works anywhere: a wheel in a fresh venv, run from an empty directory.

The wheel is built offline with the locked build backend and installed without its
dependencies, which the fresh venv borrows from the test environment's
site-packages (never the source checkout: its editable hook is not read from there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PIP: tuple[str | Path, ...] = (sys.executable, "-m", "pip")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", work / "dist", ROOT],
        check=True,
        capture_output=True,
    )
    [wheel] = (work / "dist").glob("concierge-*.whl")
    fresh = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    subprocess.run(
        [*PIP, "--python", fresh / "bin" / "python", "install", "--no-deps", "--quiet", wheel],
        check=True,
        capture_output=True,
    )
    site = Path(
        subprocess.run(
            [
                str(fresh / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return fresh


def run(venv: Path, cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "PYTHON"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [str(venv / "bin" / "concierge"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import concierge; print(concierge.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(str(venv))


def test_check_from_an_empty_directory_loads_the_packaged_defaults(
    venv: Path, tmp_path: Path
) -> None:
    result = run(venv, tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert "languages: en, fr, wo" in result.stdout
    assert "knowledge: 24 sections" in result.stdout
    assert "prompts: every service type in every language" in result.stdout


def test_chat_from_an_empty_directory_answers_a_line(venv: Path, tmp_path: Path) -> None:
    result = run(venv, tmp_path, "chat", stdin="A quelle heure est la messe dimanche ?\n")
    assert result.returncode == 0, result.stderr
    assert "10h30" in result.stdout


def test_init_writes_a_copy_the_installed_command_then_uses(venv: Path, tmp_path: Path) -> None:
    result = run(venv, tmp_path, "init", "community")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "community" / "knowledge" / "paroisse.md").is_file()
    assert (tmp_path / "community" / "languages" / "fr.toml").is_file()
    assert not list((tmp_path / "community").rglob("__pycache__"))

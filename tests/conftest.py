"""Shared test fixtures.

Tests that need the reference fixtures in ``../shared`` use the ``shared_dir`` fixture. Where that folder is
absent they are skipped with a reason, except when ``MRAA_REQUIRE_SHARED=1`` (set by ``.ci/run``): then a
missing fixture is a failure, so CI can never pass by skipping parity.
"""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _require_shared(*parts):
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent: the reference fixtures in ../shared are needed for this test"
        if os.environ.get("MRAA_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_dir():
    """The ``../shared`` folder (parity fixtures, spec, real-world media)."""
    return _require_shared()


@pytest.fixture
def realworld_dir():
    """``../shared/realworld``: a real photo and a real 133-frame video, test inputs only."""
    return _require_shared("realworld")


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder no file can be created in. Its mode is 0o555; where this process is root (CI), which the kernel
    lets write anyway, creating a file in it fails as the kernel fails it for anyone else (EACCES from os.open)."""
    import errno
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    if os.geteuid() == 0:
        real_open = os.open

        def refusing_open(path, flags, *args, **kwargs):
            inside = Path(os.path.abspath(os.fspath(path))).parent == folder
            if inside and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    yield folder
    folder.chmod(0o755)


def require_app_module(module):
    """An optional module of requirements-app.txt, or a skip; CI sets MRAA_REQUIRE_APP=1 and then a missing module
    fails the run."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed: pip install -r requirements-app.txt"
        if os.environ.get("MRAA_REQUIRE_APP") == "1":
            pytest.fail(message)
        pytest.skip(message)

"""Shared test fixtures.

The parity case ``mraa`` and the published state-dict layouts are committed under ``tests/fixtures/parity`` (copies
of ``../shared/parity``), so a fresh clone checks parity on its own: the ``parity_dir`` fixture. The other parity
cases and the real footage stay in ``../shared`` (``parity_case_dir``, ``shared_dir``, ``realworld_dir``): where
that folder is absent their tests are skipped with a reason, except when ``MRAA_REQUIRE_SHARED=1`` (set by
``.ci/run``): then a missing fixture is a failure, so CI can never pass by skipping parity.
"""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
PARITY_DIR = REPO_ROOT / "tests" / "fixtures" / "parity"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Every test (and every process a test starts) takes the device-type kernel choices, unmeasured, and float32 for
# --precision auto (a CPU with AMX would take bf16), so that runs compute alike on every CPU;
# tests/test_kernel_choice.py and the tests of auto precision measure on purpose.
os.environ["MRAA_KERNELS"] = "defaults"


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
def parity_dir():
    """The committed parity fixtures: ``mraa/`` (config, checkpoint, expected outputs) and ``state_dict_shapes.json``."""
    return PARITY_DIR


def parity_case_dir(name):
    """The folder of parity case ``name``: committed for ``mraa``, else in ``../shared/parity`` (or a skip)."""
    committed = PARITY_DIR / name
    return committed if committed.is_dir() else _require_shared("parity", name)


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

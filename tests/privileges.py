"""
Dropping privileges in tests that run as root: the user the daemon runs as
(nobody) must be able to read the interpreter's code, which may live under
a directory only root may enter (a pyenv or a clone under a 0700 /root).
Shared by the functional privilege tests and the packaging test.  (Not a
conftest: see helpers.py.)
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import sys
from pathlib import Path

import pytest


def nobody_ids() -> tuple[int, int]:
    """(uid of nobody, gid of nogroup), or skip: these tests need root and both."""
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no user nobody or group nogroup on this host")


def unreadable_as(uid: int, gid: int, paths: list[str]) -> list[str]:
    """
    Which of C{paths} uid:gid cannot read (list a directory, read a file),
    checked in a forked child that drops to those ids the way twistd does.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            failing = []
            for path in paths:
                try:
                    if os.path.isdir(path):
                        os.listdir(path)
                    else:
                        with open(path, "rb") as f:
                            f.read(1)
                except OSError:
                    failing.append(path)
            os.write(write_end, json.dumps(failing).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = f.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and answer, "the permission probe failed"
    return json.loads(answer)


def code_paths() -> list[str]:
    """
    What the daemon still imports from after it has dropped privileges: the
    directories on this interpreter's sys.path under its prefixes (stdlib,
    lib-dynload, site-packages; the daemon runs the same interpreter) and a
    module from each.
    """
    import json as stdlib_module

    import backtracweb
    import twisted

    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    dirs = [p for p in sys.path if p and os.path.isdir(p)
            and any(Path(p).resolve().is_relative_to(prefix) for prefix in prefixes)]
    return dirs + [stdlib_module.__file__, backtracweb.__file__, twisted.__file__]


@pytest.fixture
def readable_code_for_nobody():
    """
    Make sure nobody can read the interpreter's code, so that modules imported
    after the drop (the application and anything imported lazily) load.

    Where a parent directory denies nobody traversal (a clone or pyenv under
    a 0700 /root, as in CI where the venv is CLONE/.venv), o+x is added to that
    directory for the test only: traversal, not listing. Inside sys.prefix
    (the venv, e.g. created under umask 077), o+rX is added recursively. Every
    mode changed is restored afterwards. If nobody still cannot read the code
    the test fails: skipping would hide the very thing under test.
    """
    uid, gid = nobody_ids()
    changed: list[tuple[Path, int]] = []

    def add(path: Path, bits: int) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & bits != bits:
            changed.append((path, mode))
            path.chmod(mode | bits)

    try:
        failing = unreadable_as(uid, gid, code_paths())
        for path in failing:
            for parent in reversed(Path(path).resolve().parents):
                add(parent, stat.S_IXOTH)
        prefix = Path(sys.prefix).resolve()
        for path in unreadable_as(uid, gid, failing) if failing else []:
            if Path(path).resolve().is_relative_to(prefix):
                for root, dirs, files in os.walk(prefix):
                    add(Path(root), stat.S_IROTH | stat.S_IXOTH)
                    for name in files:
                        if not os.path.islink(os.path.join(root, name)):
                            add(Path(root, name), stat.S_IROTH)
                break
        still = unreadable_as(uid, gid, code_paths())
        if still:
            pytest.fail(f"nobody cannot read {still} even after granting o+x on their parents")
        yield uid, gid
    finally:
        for path, mode in reversed(changed):
            path.chmod(mode)

"""Fallbacks paths that are not regular files, reached every way a user can hand one over (issue 11, #11).

tests/test_config_hostile.py covers a FIFO and ``/dev/zero`` through the environment. Here: a
directory, a symlink to a FIFO, a Unix socket file, and the same paths passed to ``install()`` as an
override, or with the master switch turned off by ``install(enabled=False)``. Each must end in one
warning and no fallbacks (never a hang, never an exception), and a switched-off install opens nothing.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest

import bedrock_hooks
from bedrock_hooks import config
from conftest import new_session
from test_config_hostile import bounded


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch, caplog):
    monkeypatch.setattr(config, "_warned", set())
    caplog.set_level(logging.DEBUG, logger="bedrock_hooks")
    yield
    while _keep:
        _keep.pop().close()


def _fifo(path) -> str:
    os.mkfifo(path)
    return str(path)


def directory(tmp_path) -> tuple[str, str | None]:
    path = tmp_path / "chains.json"
    path.mkdir()
    return str(path), None


def symlink_to_fifo(tmp_path) -> tuple[str, str | None]:
    target = _fifo(tmp_path / "pipe")
    link = tmp_path / "chains.json"
    link.symlink_to(target)
    return str(link), target


def socket_file(tmp_path) -> tuple[str, str | None]:
    path = tmp_path / "chains.toml"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    _keep.append(server)
    return str(path), None


_keep: list[socket.socket] = []
PATHS = [directory, symlink_to_fifo, socket_file]


def _install_in_thread(target_path: str, unblock: str | None, **overrides):
    return bounded(lambda: bedrock_hooks.install(new_session(), **overrides), unblock, f"install() on {target_path}")


@pytest.mark.parametrize("make", PATHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("given", ["environment", "override"])
def test_a_fallbacks_path_that_is_no_regular_file_is_one_warning(make, given, tmp_path, monkeypatch, caplog):
    path, unblock = make(tmp_path)
    if given == "environment":
        monkeypatch.setenv("BEDROCK_HOOKS_FALLBACKS", path)
        installation = _install_in_thread(path, unblock)
        label = "BEDROCK_HOOKS_FALLBACKS"
    else:
        installation = _install_in_thread(path, unblock, fallbacks=path)
        label = "install(fallbacks=...)"
    assert installation.active and installation.settings.fallbacks == ()
    warnings = [r.getMessage() for r in caplog.records if label in r.getMessage()]
    assert len(warnings) == 1 and "using (none)" in warnings[0], warnings


@pytest.mark.parametrize("make", PATHS, ids=lambda f: f.__name__)
def test_install_switched_off_by_keyword_opens_no_fallbacks_path(make, tmp_path, monkeypatch, caplog):
    path, unblock = make(tmp_path)
    monkeypatch.setenv("BEDROCK_HOOKS_FALLBACKS", path)
    opened: list[str] = []
    real_open, real_stat = os.open, os.stat
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: opened.append(str(p)) or real_stat(p, *a, **k))
    installation = _install_in_thread(path, unblock, enabled=False, fallbacks=path)
    assert installation.kind == "disabled" and not installation.active
    assert path not in opened
    assert not [r for r in caplog.records if "FALLBACKS" in r.getMessage() or "fallbacks" in r.getMessage()]

"""API keys: parsing the keys file and the environment, roles, constant-time lookup."""

from __future__ import annotations

import pytest

from simsearch.auth import ENV_VAR, KeyRing, allows, load_keys
from simsearch.errors import ParameterError

W = "w" * 12 + "-write-token"
R = "r" * 12 + "-read-token"


def test_keys_from_file_and_environment(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# moderators' service\nwrite {W}\n\n  read   {R}  # dashboards\n")
    ring = load_keys(f, environ={ENV_VAR: "read:" + "e" * 20})
    assert len(ring) == 3
    assert ring.role_of(W) == "write" and ring.role_of(R) == "read" and ring.role_of("e" * 20) == "read"
    assert ring.role_of(W[:-1]) is None and ring.role_of("") is None and ring.role_of(W + " ") is None
    assert ring.roles() == {"read": 2, "write": 1}
    # Only digests are kept.
    assert all(W.encode() not in d for d, _ in ring.digests)


def test_no_keys_at_all():
    ring = load_keys(None, environ={})
    assert len(ring) == 0 and not ring and ring.role_of(W) is None and KeyRing().role_of("x") is None


def test_roles():
    assert allows("write", "write") and allows("write", "read") and allows("read", "read")
    assert not allows("read", "write") and not allows(None, "read")


@pytest.mark.parametrize("line", ["admin " + W, "write", f"write {W} extra", "write short-token"])
def test_bad_keys_file_lines(tmp_path, line):
    f = tmp_path / "keys"
    f.write_text(line + "\n")
    with pytest.raises(ParameterError, match=r"keys:1"):
        load_keys(f, environ={})


@pytest.mark.parametrize("value", [W, "owner:" + W, "write:short", "write:" + W + "\x07"])
def test_bad_environment(value):
    with pytest.raises(ParameterError, match=ENV_VAR):
        load_keys(None, environ={ENV_VAR: value})


def test_missing_keys_file(tmp_path):
    with pytest.raises(ParameterError, match="cannot read the keys file"):
        load_keys(tmp_path / "absent", environ={})

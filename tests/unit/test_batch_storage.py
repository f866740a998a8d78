"""Batch file storage: a tenant's files in its own folder; a missing fsspec driver is a clear error."""

from __future__ import annotations

import importlib.util

import pytest

from ossfleet.errors import Unavailable
from ossfleet.storage import FileStorage


def test_files_round_trip_under_the_tenants_folder(tmp_path):
    s = FileStorage(str(tmp_path))
    p = s.path("acme", "file-1.jsonl")
    assert p.startswith(str(tmp_path)) and "/acme/" in p
    s.put(p, b'{"a": 1}\n{"b": 2}\n')
    assert s.get(p) == b'{"a": 1}\n{"b": 2}\n'
    assert list(s.iter_lines(p)) == ['{"a": 1}', '{"b": 2}']
    out = s.path("acme", "out.jsonl")
    assert s.write_lines(out, iter(["x", "yz"])) == 5
    assert s.get(out) == b"x\nyz\n"
    s.delete(p)
    assert not (tmp_path / "acme" / "file-1.jsonl").exists()


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_an_s3_url_without_its_driver_says_what_to_install_on_first_use():
    s = FileStorage("s3://bucket/prefix")  # constructing it opens nothing: a gateway still starts
    with pytest.raises(Unavailable, match="s3fs"):
        s.path("acme", "f")

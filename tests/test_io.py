"""``bebkit.io.reroot_paths``: paths under one folder moved under another, nothing else."""

from __future__ import annotations

from pathlib import Path

from bebkit.io import reroot_paths


def test_paths_inside_the_folder_move_and_nothing_else_does() -> None:
    obj = {
        "file": "/run/.tmp-1/models/a/adapter",
        "nested": [("/run/.tmp-1/x.json", "/run/.tmp-10/y.json"), {"n": 3, "f": 1.5}],
        "other": "/elsewhere/z",
        "word": "models",
    }
    rel = reroot_paths(obj, Path("/run/.tmp-1"))
    assert rel == {
        "file": "models/a/adapter",
        "nested": [["x.json", "/run/.tmp-10/y.json"], {"n": 3, "f": 1.5}],  # a sibling folder
        "other": "/elsewhere/z",
        "word": "models",
    }
    moved = reroot_paths(obj, "/run/.tmp-1/", "<out>")
    assert moved["file"] == "<out>/models/a/adapter"
    assert reroot_paths(moved, "<out>", "/run/final") == {
        **rel,
        "file": "/run/final/models/a/adapter",
        "nested": [["/run/final/x.json", "/run/.tmp-10/y.json"], {"n": 3, "f": 1.5}],
    }

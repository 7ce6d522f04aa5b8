"""The stage runner: content-addressed caching, resume, and no partial results."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bebkit.errors import DiskFullError
from bebkit.pipeline.stages import Stage, StageContext, StageRunner, derive_seed, stable_hash


def _draw(ctx: StageContext) -> dict[str, object]:
    rng = np.random.default_rng(ctx.seed)
    values = rng.normal(size=int(ctx.config["n"])).tolist()
    ctx.path("samples.json").write_text(json.dumps(values))
    return {"mean": float(np.mean(values))}


def _double(ctx: StageContext) -> dict[str, object]:
    return {"twice": 2 * float(ctx.inputs["draw"]["mean"])}


def test_stable_hash_is_order_independent_and_sensitive() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_derive_seed_depends_on_stage_and_run_seed() -> None:
    assert derive_seed(0, "x") == derive_seed(0, "x")
    assert derive_seed(0, "x") != derive_seed(0, "y")
    assert derive_seed(0, "x") != derive_seed(1, "x")


def test_rerun_uses_cache_and_config_change_recomputes(tmp_path: Path) -> None:
    calls: list[str] = []

    def draw(ctx: StageContext) -> dict[str, object]:
        calls.append(ctx.name)
        return _draw(ctx)

    stages = [Stage("draw", draw, {"n": 50}), Stage("double", _double, deps=("draw",))]
    first = StageRunner(tmp_path, seed=3).run_all(stages)
    assert not first["draw"].cached
    assert (first["draw"].folder / "samples.json").is_file()
    second = StageRunner(tmp_path, seed=3).run_all(stages)
    assert second["draw"].cached and second["double"].cached
    assert second["double"].result == first["double"].result
    assert calls == ["draw"]
    changed = [Stage("draw", draw, {"n": 51}), Stage("double", _double, deps=("draw",))]
    third = StageRunner(tmp_path, seed=3).run_all(changed)
    assert not third["draw"].cached and not third["double"].cached
    assert calls == ["draw", "draw"]


def test_failed_stage_leaves_no_result(tmp_path: Path) -> None:
    def boom(ctx: StageContext) -> dict[str, object]:
        ctx.path("partial.txt").write_text("half")
        raise RuntimeError("model exploded")

    runner = StageRunner(tmp_path, seed=0)
    with pytest.raises(RuntimeError):
        runner.run(Stage("boom", boom))
    assert not list((tmp_path / "stages" / "boom").glob("*/result.json"))
    assert not list((tmp_path / "stages" / "boom").glob(".tmp-*"))


_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from bebkit.pipeline.stages import Stage, StageRunner

    def slow(ctx):
        rng = np.random.default_rng(ctx.seed)
        out = []
        for i in range(4):
            out.append(float(rng.normal()))
            ctx.path(f"part{i}.txt").write_text(str(out[-1]))
            if os.environ.get("HANG") and i == 2:
                open(sys.argv[2], "w").close()  # tell the parent we are mid-stage
                time.sleep(60)
        return {"values": out}

    def first(ctx):
        return {"x": float(np.random.default_rng(ctx.seed).normal())}

    runner = StageRunner(sys.argv[1], seed=7)
    res = runner.run_all([Stage("first", first), Stage("slow", slow, deps=("first",))])
    print(json.dumps({k: v.result for k, v in res.items()}))
    """
)


def test_sigkill_mid_stage_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    clean = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "clean"), "-"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    expected = json.loads(clean.stdout.strip().splitlines()[-1])

    flag = tmp_path / "mid"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "killed"), str(flag)],
        env={**env, "HANG": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(600):
        if flag.exists():
            break
        if proc.poll() is not None:
            pytest.fail(f"job ended early: {proc.stderr.read() if proc.stderr else ''!r}")
        import time

        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The killed stage left only a temp folder, never a result.
    assert not list((tmp_path / "killed" / "stages" / "slow").glob("*/result.json"))
    resumed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "killed"), "-"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("damage", ["edit_result", "edit_file", "truncate_file", "drop_record"])
def test_damaged_stage_folder_is_recomputed_or_refused(tmp_path: Path, damage: str) -> None:
    """A cached stage is trusted only if its files match the hashes recorded at publish time:
    a hand-edited result.json, an edited or truncated output and a missing integrity record
    are each detected; the stage is recomputed to the original numbers, or (recompute=False)
    the run stops with IntegrityError."""
    from bebkit.integrity import INTEGRITY_FILE, IntegrityError

    stage = Stage("draw", _draw, {"n": 50})
    first = StageRunner(tmp_path, seed=4).run(stage)
    result = first.folder / "result.json"
    if damage == "edit_result":
        payload = json.loads(result.read_text())
        payload["result"]["mean"] = 123.0
        result.write_text(json.dumps(payload))
    elif damage == "edit_file":
        (first.folder / "samples.json").write_text("[1.0, 2.0]")
    elif damage == "truncate_file":
        data = (first.folder / "samples.json").read_bytes()
        (first.folder / "samples.json").write_bytes(data[: len(data) // 2])
    else:
        (first.folder / INTEGRITY_FILE).unlink()
    with pytest.raises(IntegrityError, match="stage draw"):
        StageRunner(tmp_path, seed=4, recompute=False).run(stage)
    events: list[str] = []
    again = StageRunner(tmp_path, seed=4, on_event=lambda _s, e: events.append(e)).run(stage)
    assert not again.cached and any(e.startswith("invalid:") for e in events)
    assert again.result == first.result
    assert StageRunner(tmp_path, seed=4).run(stage).cached  # intact again


def test_a_second_reproduce_on_the_same_run_folder_fails_at_once(tmp_path: Path) -> None:
    from bebkit.locks import LockedError, RunLock
    from bebkit.pipeline.config import ReproduceConfig
    from bebkit.pipeline.reproduce import reproduce

    with RunLock(tmp_path), pytest.raises(LockedError, match=str(os.getpid())):
        reproduce(ReproduceConfig(), tmp_path)
    assert not (tmp_path / "record.json").exists()


def _no_space(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _partial_write_text(self: Path, data: str, *_args: object, **_kwargs: object) -> int:
    with open(self, "w") as fh:
        fh.write(data[:5])  # part of the file reached the disk
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["stage-output", "result-json"])
def test_disk_full_in_a_stage_is_one_line_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The disk fills while the stage writes its own file, or while its result.json is
    fsynced: one line, no stage folder (not even the temp one); once there is room again the
    rerun gives the clean run's numbers."""
    stage = Stage("draw", _draw, {"n": 50})
    clean = StageRunner(tmp_path / "clean", seed=4).run(stage)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        if where == "stage-output":
            m.setattr(Path, "write_text", _partial_write_text)
        else:
            m.setattr(os, "fsync", _no_space)
        with pytest.raises(DiskFullError) as info:
            StageRunner(run, seed=4).run(stage)
    assert str(info.value) == (
        f"cannot write stage draw in {run / 'stages' / 'draw'}: no space left on device; "
        "nothing was published"
    )
    assert list((run / "stages" / "draw").iterdir()) == []
    again = StageRunner(run, seed=4).run(stage)
    assert not again.cached and again.result == clean.result


def _fill_disk(ctx: StageContext) -> dict[str, object]:
    ctx.path("big.bin").write_text("x" * 100)
    return {}


@pytest.mark.parametrize("where", ["stage", "record"])
def test_disk_full_in_reproduce_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], where: str
) -> None:
    """``bebkit reproduce`` on a disk that fills up in a stage or while the record is written:
    exit 1, no traceback, one error line; finished stages kept, nothing half-written."""
    import bebkit.pipeline.reproduce as rep
    from bebkit.cli import main
    from bebkit.io import atomic_open

    stages = [Stage("draw", _draw, {"n": 5}), Stage("fill", _fill_disk)]
    monkeypatch.setattr(rep, "build_stages", lambda *_a, **_k: stages)
    if where == "stage":
        real_write_text = Path.write_text

        def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
            if self.name == "big.bin":
                return _partial_write_text(self, data)
            return real_write_text(self, data, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "write_text", write_text)
    else:

        def write_record(path: Path, _record: object) -> None:
            with atomic_open(path) as fh:
                fh.write("{")
                _no_space()

        monkeypatch.setattr(rep, "write_record", write_record)
    cfg, run = tmp_path / "run.yaml", tmp_path / "run"
    cfg.write_text("name: full\nbehaviors: [cooperativeness]\n", encoding="utf-8")
    capfd.readouterr()
    code = main(["reproduce", str(cfg), "--out", str(run)])
    err = capfd.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [err.strip().splitlines()[-1]]
    if where == "stage":
        assert errors[0] == (
            "bebkit reproduce: error: stage failed (DiskFullError: cannot write stage fill in "
            f"{run / 'stages' / 'fill'}: no space left on device; nothing was published); "
            f"finished stages are kept in {run}"
        )
        assert list((run / "stages" / "fill").iterdir()) == []
        assert json.loads((run / "record.json").read_text())["status"] == "failed"
    else:
        assert errors[0] == (
            f"bebkit reproduce: error: cannot write the run's record and report in {run}: "
            "no space left on device; finished stages are kept"
        )
        assert not (run / "record.json").exists() and not (run / "report.html").exists()
        assert not list(run.glob(".*.tmp"))
        assert len(list((run / "stages" / "fill").glob("*/result.json"))) == 1
    assert len(list((run / "stages" / "draw").glob("*/result.json"))) == 1


def test_record_states_what_reproducibility_rests_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record says whether its numbers are bit-identical (same seed and thread count) and
    what differs across thread counts (tests/components/test_determinism.py measures it)."""
    import torch

    import bebkit.pipeline.reproduce as rep
    from bebkit.pipeline.config import ReproduceConfig

    monkeypatch.setattr(rep, "build_stages", lambda *_a, **_k: [Stage("draw", _draw, {"n": 5})])
    rec = rep.reproduce(ReproduceConfig(), tmp_path / "run")
    det = rec["determinism"]
    assert det["torch_threads"] == torch.get_num_threads()
    assert det["same_seed_same_threads"] == "bit-identical"
    assert det["across_thread_counts"].startswith("log-prob passes bit-identical; adapter")
    assert json.loads((tmp_path / "run" / "record.json").read_text())["determinism"] == det
    again = rep.reproduce(ReproduceConfig(), tmp_path / "run")  # resumed: the same numbers
    assert again["results"]["stages"]["draw"]["cached"]
    assert (
        again["results"]["stages"]["draw"]["result"] == rec["results"]["stages"]["draw"]["result"]
    )


def _units(ctx: StageContext) -> dict[str, object]:
    """A stage of three checkpointed units that fails after the second on its first attempt."""
    from bebkit.checkpoint import Checkpoint

    assert ctx.checkpoint_dir is not None
    rng = np.random.default_rng(ctx.seed)
    ck = Checkpoint(ctx.checkpoint_dir)
    values = []
    for i in range(3):
        values.append(ck.unit(f"u{i}", rng, lambda: float(rng.normal()), dump=float, load=float))
        if i == 1 and ctx.config.get("fail") and ck.computed == 2:
            raise RuntimeError("killed between units")
    return {"values": values, "reused": ck.reused}


def test_a_failed_stage_keeps_its_units_for_the_next_attempt_of_the_same_key(
    tmp_path: Path,
) -> None:
    clean = StageRunner(tmp_path / "clean", seed=4).run(Stage("s", _units, {"n": 1}))
    stage = Stage("s", _units, {"n": 1, "fail": True})
    runner = StageRunner(tmp_path / "run", seed=4)
    with pytest.raises(RuntimeError, match="killed between units"):
        runner.run(stage)
    partial = list((tmp_path / "run" / "stages" / "s").glob(".partial-*"))
    assert len(partial) == 1 and len(list(partial[0].glob("*.json"))) == 2
    assert not list((tmp_path / "run" / "stages" / "s").glob(".tmp-*"))
    # Another key (other settings, same seed: the same draws) gets its own, empty folder:
    # nothing of this attempt leaks into it.
    other = StageRunner(tmp_path / "run", seed=4).run(Stage("s", _units, {"n": 2}))
    assert other.result["reused"] == 0 and other.result["values"] == clean.result["values"]
    # The next attempt of the same key reuses both units, ends with the uninterrupted values
    # (same seed, config aside) and removes the folder once the stage is published.
    done = StageRunner(tmp_path / "run", seed=4).run(stage)
    assert done.result["reused"] == 2
    assert done.result["values"] == clean.result["values"]
    assert not list((tmp_path / "run" / "stages" / "s").glob(".partial-*"))


def test_units_of_stages_no_longer_planned_or_already_published_are_removed(
    tmp_path: Path,
) -> None:
    from bebkit.pipeline.stages import plan_keys

    stage = Stage("s", _units, {"n": 1, "fail": True})
    with pytest.raises(RuntimeError):
        StageRunner(tmp_path, seed=4).run(stage)
    with pytest.raises(RuntimeError):
        StageRunner(tmp_path, seed=4).run(Stage("s", _units, {"n": 3, "fail": True}))
    parts = sorted(p.name for p in (tmp_path / "stages" / "s").glob(".partial-*"))
    assert len(parts) == 2
    keep = plan_keys([stage], 4)
    assert StageRunner(tmp_path, seed=4).sweep_temp(keep_partial=keep.values()) == 1
    left = [p.name for p in (tmp_path / "stages" / "s").glob(".partial-*")]
    assert left == [f".partial-{keep['s']}"]
    # A stage published by an attempt killed before it removed its units: the next run
    # reads it from the cache and removes the leftover units.
    done = StageRunner(tmp_path, seed=4).run(stage)
    (tmp_path / "stages" / "s" / f".partial-{done.key}").mkdir()
    again = StageRunner(tmp_path, seed=4).run(stage)
    assert again.cached and not list((tmp_path / "stages" / "s").glob(".partial-*"))


def test_run_context_checkpoints_carry_the_weights_of_the_adapters_it_asked_for(
    tmp_path: Path,
) -> None:
    """A stage's stored units are keyed by the SHA-256 of exactly the adapters the stage
    asked for (not by whatever else the shared provider holds), read from each adapter's
    integrity record."""
    from bebkit.components.workflow import SideStatus
    from bebkit.integrity import write_manifest
    from bebkit.pipeline.registry import RunContext

    folders = {}
    for side, content in (("neg", b"weights-1"), ("pos", b"weights-2")):
        folder = tmp_path / side
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(content)
        write_manifest(folder)
        folders[side] = folder
    status = {s: SideStatus(s, f, True, {"key": "k"}) for s, f in folders.items()}
    assert status["neg"].weights_sha256 == hashlib.sha256(b"weights-1").hexdigest()
    assert status["neg"].to_dict()["weights_sha256"] == status["neg"].weights_sha256
    assert SideStatus("neg", tmp_path, True, {}).weights_sha256 is None  # no record there

    class Provider:
        def components(self, model: str, behavior: str, fmt: str, sides: Any, role: str) -> str:
            return "comps"

        def provenance(self, model: str, behavior: str, fmt: str) -> dict[str, Any]:
            return {}

        def weights_sha256(
            self, model: str, behavior: str, fmt: str, side: str, role: str
        ) -> str | None:
            return status[side].weights_sha256 if behavior == "b" else "other"

    ctx = RunContext(out=tmp_path, log=lambda _m: None, provider=Provider(), model="m",
                     checkpoint_dir=tmp_path / "units")  # fmt: skip
    assert ctx.weights_identity() == {}
    ctx.components("b", "newline", ("neg",))
    assert ctx.weights_identity() == {"b/newline/neg/shared": status["neg"].weights_sha256}
    ck = ctx.checkpoint("units")
    assert ck.identity is not None and ck.identity() == ctx.weights_identity()
    ctx.components("b", "newline", ("pos",), "judge")
    assert set(ck.identity()) == {"b/newline/neg/shared", "b/newline/pos/judge"}


def test_a_stage_resumed_on_another_cpu_publishes_which_cpus_computed_its_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU is not in a unit's fingerprint (last-bit rounding is no reason to recompute
    hours of units), so a stage resumed on another machine reuses them; the published stage
    then says how many units each CPU computed."""
    from bebkit import checkpoint

    stage = Stage("s", _units, {"n": 1, "fail": True})
    monkeypatch.setattr(checkpoint, "machine_identity", lambda: "CPU A")
    with pytest.raises(RuntimeError, match="killed between units"):
        StageRunner(tmp_path / "run", seed=4).run(stage)
    monkeypatch.setattr(checkpoint, "machine_identity", lambda: "CPU B")
    done = StageRunner(tmp_path / "run", seed=4).run(stage)
    assert done.result["reused"] == 2
    payload = json.loads((done.folder / "result.json").read_text())
    assert payload["units"] == {"units": 3, "machines": {"CPU A": 2, "CPU B": 1}}
    # a stage that stores no units says nothing about them
    plain = StageRunner(tmp_path / "run2", seed=4).run(Stage("d", _draw, {"n": 3}))
    assert "units" not in json.loads((plain.folder / "result.json").read_text())

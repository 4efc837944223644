"""Killed at any point, export, train and fit leave their previous result whole; the next run tidies up.

Each job runs in a subprocess that is killed (SIGKILL: no handler, no cleanup) after a delay drawn
with a fixed seed, and also at chosen points: paused at an ``os.replace`` of :mod:`asqhw.atomic`
(before the first rename of a bundle replacement, and between its two renames) and killed there.
Afterwards the result is the previous one or the new one, byte for byte, never a mixture or
nothing; the next complete run leaves no temporary behind.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asqhw.atomic import old_dir, recover_dir

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "models" / "checkpoints"
SEED = 14  # of the kill delays
RANDOM_KILLS = 3

# Runs one job in the child: `export ...`/`train ...` through the asqhw CLI, or `fit OUTCOME OUT_DIR`
# with synthesis faked (each candidate takes 0.3 s; OUTCOME: which candidates fit). With
# PAUSE_AT_REPLACE=N, the N-th os.replace of asqhw.atomic first creates PAUSE_MARKER, then hangs.
RUNNER = r"""
import os, sys, time
import asqhw.atomic as atomic

pause_at = int(os.environ.get("PAUSE_AT_REPLACE", "0"))
if pause_at:
    real_os, calls = os, []

    class PausingOs:
        def __getattr__(self, name):
            return getattr(real_os, name)

        def replace(self, src, dst):
            calls.append(dst)
            if len(calls) == pause_at:
                open(os.environ["PAUSE_MARKER"], "w").close()
                time.sleep(3600)
            real_os.replace(src, dst)

    atomic.os = PausingOs()

if sys.argv[1] != "fit":
    from asqhw.cli import main
    sys.exit(main(sys.argv[1:]))

from types import SimpleNamespace
import hw.eda.fit as fit
import hw.eda.generate as generate
import hw.eda.synth as synth
from asqhw.errors import UserError

outcome, out_dir = sys.argv[2], sys.argv[3]
cands = [{"pe": pe, "simd": 1, "cycles_per_inference": 8000 // pe, "inferences_per_s": 1500.0 * pe,
          "estimate": {"lut4": 100 * pe, "bram": 1}} for pe in (8, 4, 2, 1)]
fit.candidates = lambda bundle, board, mul=None, max_par=16: cands
generate.build_top = lambda bundle, pe, simd, mul=None: SimpleNamespace(plan=SimpleNamespace(input_codes=64))

def fake_synthesize(top, board, out, *, macs_per_cycle, **kwargs):
    time.sleep(0.3)
    fits = {"first": True, "third": macs_per_cycle <= 2, "none": False}[outcome]
    if not fits:
        raise UserError("place and route failed\nERROR: Unable to place cell\n  LUT4 9000 > 5280")
    return {"resources": {"lut4": {"used": 1000 + macs_per_cycle}}, "fmax_mhz": {"median": 20.0}}

synth.synthesize_top = fake_synthesize
try:
    fit.find_fit(None, "icebreaker", out_dir=out_dir)
except UserError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
"""


def _command(args) -> list[str]:
    return [sys.executable, "-c", RUNNER, *map(str, args)]


def _env(**extra) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(args) -> float:
    """Run a job to completion; return its wall time."""
    started = time.perf_counter()
    done = subprocess.run(_command(args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 2), done.stderr
    return time.perf_counter() - started


def _kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)  # the child leads its own session: its helpers go too
    child.wait(timeout=60)


def _run_killed_after(args, delay: float) -> None:
    child = subprocess.Popen(_command(args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    _kill(child)


def _run_killed_at_replace(args, n: int, tmp_path: Path) -> None:
    """Run a job, kill it while its ``n``-th atomic rename is about to happen."""
    marker = tmp_path / f"paused-{n}"
    marker.unlink(missing_ok=True)
    child = subprocess.Popen(_command(args), env=_env(PAUSE_AT_REPLACE=str(n), PAUSE_MARKER=str(marker)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"{args[0]} ended before its rename {n}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        _kill(child)


def _delays(total: float) -> list[float]:
    rng = random.Random(SEED)
    return sorted(rng.uniform(0.3, total) for _ in range(RANDOM_KILLS))


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_killed_export_keeps_a_whole_bundle(tmp_path):
    previous_ckpt, new_ckpt = CHECKPOINTS / "digits-b3.pt", CHECKPOINTS / "digits-b4.pt"
    (tmp_path / "ref").mkdir()
    _run(["export", new_ckpt, tmp_path / "ref" / "bundle", "--quiet"])
    work = tmp_path / "work"
    work.mkdir()
    target = work / "bundle"
    total = _run(["export", previous_ckpt, target, "--quiet"])
    previous, new = _files(target), _files(tmp_path / "ref" / "bundle")
    assert previous != new
    job = ["export", new_ckpt, target, "--quiet"]

    _run_killed_at_replace(job, 1, tmp_path)  # new bundle complete, nothing renamed yet
    assert _files(target) == previous
    _run_killed_at_replace(job, 2, tmp_path)  # old bundle moved aside, new one not yet in place
    assert not target.exists() and _files(old_dir(target)) == previous
    recover_dir(target)  # what the next export (or a reader) does first
    assert _files(target) == previous

    for delay in _delays(total):
        _run_killed_after(job, delay)
        recover_dir(target)
        assert _files(target) in (previous, new), f"killed after {delay:.2f} s"

    _run_killed_at_replace(job, 2, tmp_path)  # leave the worst case for the next complete run
    _run(job)
    assert _files(target) == new
    assert sorted(p.name for p in work.iterdir()) == ["bundle"]


@pytest.mark.slow
@pytest.mark.train
def test_killed_training_keeps_a_loadable_checkpoint(tmp_path):
    from quant.checkpoint import load_checkpoint, read_checkpoint

    out = tmp_path / "run"
    common = ["train", "--scheme", "fp", "--epochs", "2", "--workers", "0", "--out", out]
    total = _run([*common, "--seed", "1"])
    checkpoint = out / "checkpoint.pt"
    previous = checkpoint.read_bytes()
    job = [*common, "--seed", "2", "--force"]

    def check(context: str) -> None:
        payload = read_checkpoint(checkpoint)  # loadable: never half written
        assert checkpoint.read_bytes() == previous or payload["config"]["seed"] == 2, context
        load_checkpoint(checkpoint)
        json.loads((out / "metrics.json").read_text())

    assert subprocess.run(_command(common), env=_env(), capture_output=True).returncode == 2  # refused
    assert checkpoint.read_bytes() == previous
    _run_killed_at_replace(job, 1, tmp_path)  # the first epoch's checkpoint complete, not renamed
    assert checkpoint.read_bytes() == previous
    assert _temporaries(out)  # the killed writer's temporary is left behind
    for delay in _delays(total):
        _run_killed_after(job, delay)
        check(f"killed after {delay:.2f} s")

    _run(job)
    check("complete")
    assert read_checkpoint(checkpoint)["complete"] and _temporaries(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]


@pytest.mark.slow
def test_killed_fit_keeps_the_previous_result(tmp_path):
    out = tmp_path / "fit"
    total = _run(["fit", "first", out])
    result = out / "fit.json"
    previous = result.read_bytes()
    assert json.loads(previous)["best"]["pe"] == 8

    _run_killed_at_replace(["fit", "third", out], 1, tmp_path)  # the new fit.json complete, not renamed
    assert result.read_bytes() == previous and _temporaries(out)
    for index, delay in enumerate(_delays(total + 0.9)):  # 2 extra candidates of 0.3 s each, and margin
        outcome = ("third", "none")[index % 2]
        _run_killed_after(["fit", outcome, out], delay)
        best = json.loads(result.read_text())["best"]  # whole JSON, never half written
        assert result.read_bytes() == previous or best["pe"] == 2, f"{outcome} killed after {delay:.2f} s"

    _run(["fit", "none", out])  # a failed search never replaces a result
    assert json.loads(result.read_text())["best"] is not None
    _run(["fit", "third", out])
    assert json.loads(result.read_text())["best"]["pe"] == 2
    assert _temporaries(out) == []


def test_reading_a_bundle_restores_one_an_interrupted_export_was_replacing(tmp_path, shipped_bundle):
    """Killed between its two renames, an export leaves only ``.NAME.old``: a reader puts it back."""
    import shutil

    from asqhw.atomic import old_dir
    from golden.bundle import read_bundle

    path = tmp_path / "digits-b3"
    shutil.copytree(shipped_bundle(3), old_dir(path))  # what the kill leaves: no NAME, only .NAME.old
    bundle = read_bundle(path)
    assert bundle.manifest.bits == 3 and path.is_dir() and not old_dir(path).exists()
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in shipped_bundle(3).iterdir())

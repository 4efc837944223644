"""Training on the real digits data: accuracy targets, checkpoints, resume, CLI and DDP."""

import argparse
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import quant.cli
import quant.train as train_module
from asqhw.errors import UserError
from quant.checkpoint import load_checkpoint, read_checkpoint
from quant.data import digits_split
from quant.models import build_model
from quant.quantize import quantized_layers
from quant.quantizers import ASQActivation
from quant.train import CHECKPOINT_NAME, METRICS_NAME, TrainConfig, run_training, train

# The paper's pairing (docs/design.md section 1.4): ASQ+POST at 3 and 4 bits, ASQ at 2.
RUNS = {"b4": ("asq+post", 4), "b3": ("asq+post", 3), "b2": ("asq", 2)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Full precision, then the quantized runs, each from the cached full-precision model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's cores are shared with other tests; restored below
    root = tmp_path_factory.mktemp("train")
    results = {"root": root}
    results["fp"] = train(TrainConfig(model="digits", scheme="fp", bits=None, out=root / "digits-fp"))
    fp_checkpoint = root / "digits-fp" / CHECKPOINT_NAME
    fp_mtime = fp_checkpoint.stat().st_mtime_ns
    for key, (scheme, bits) in RUNS.items():
        results[key] = train(TrainConfig(model="digits", scheme=scheme, bits=bits, out=root / f"digits-{key}"))
    results["fp_reused"] = fp_checkpoint.stat().st_mtime_ns == fp_mtime
    print("digits test top-1: " + ", ".join(f"{k} {results[k]['top1']:.2f} %" for k in ("fp", *RUNS)))
    yield results
    torch.set_num_threads(threads)


@pytest.mark.train
def test_full_precision_digits_reaches_97(trained):
    assert trained["fp"]["top1"] >= 97.0


@pytest.mark.train
def test_asq_post_4_bit_within_1_point_of_full_precision(trained):
    assert trained["b4"]["top1"] >= trained["fp"]["top1"] - 1.0


@pytest.mark.train
def test_asq_post_3_bit_within_2_points_of_full_precision(trained):
    assert trained["b3"]["top1"] >= trained["fp"]["top1"] - 2.0


@pytest.mark.train
def test_asq_2_bit_reported(trained):
    print(f"2-bit ASQ digits test top-1: {trained['b2']['top1']:.2f} % (full precision {trained['fp']['top1']:.2f} %)")
    assert trained["b2"]["top1"] >= 90.0
    assert trained["fp_reused"], "the quantized runs retrained the cached full-precision model"


def _independent_top1(model) -> float:
    _, _, x_test, y_test = digits_split()
    with torch.no_grad():
        predicted = model(x_test).argmax(dim=1)
    return 100.0 * (predicted == y_test).double().mean().item()


@pytest.mark.train
def test_checkpoint_round_trip_and_metadata(trained):
    path = trained["root"] / "digits-b3" / CHECKPOINT_NAME
    model, meta = load_checkpoint(path)
    assert not model.training
    assert {k: meta[k] for k in ("model", "scheme", "bits", "epoch", "complete")} == {
        "model": "digits", "scheme": "asq+post", "bits": 3, "epoch": meta["epochs"], "complete": True}
    assert meta["metrics"]["top1"] == pytest.approx(_independent_top1(model))
    assert meta["metrics"]["top1"] == pytest.approx(trained["b3"]["top1"])
    layers = dict(quantized_layers(model))
    assert isinstance(layers["conv2"].act_quant, ASQActivation) and layers["conv3"].weight_quant.kind == "post"
    assert set(read_checkpoint(path)) >= {"state_dict", "optimizer", "rng", "format", "format_version"}
    log = json.loads((path.parent / METRICS_NAME).read_text())
    assert len(log["epochs"]) == meta["epochs"] and log["epochs"][-1]["test"]["top1"] == meta["metrics"]["top1"]
    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]  # no temp files


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="not an asqhw checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


@pytest.mark.train
def test_resume_is_bit_identical(trained, tmp_path, monkeypatch):
    init = str(trained["root"] / "digits-fp" / CHECKPOINT_NAME)
    settings = {"model": "digits", "scheme": "asq+post", "bits": 3, "epochs": 3, "init": init, "seed": 5}
    train(TrainConfig(out=tmp_path / "straight", **settings))

    real_epoch = train_module._train_epoch

    def interrupted(net, loader, optimizer, config, ctx, epoch, total_steps):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(net, loader, optimizer, config, ctx, epoch, total_steps)

    monkeypatch.setattr(train_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=tmp_path / "resumed", **settings))
    assert read_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)["epoch"] == 2
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)
    train(TrainConfig(out=tmp_path / "resumed", resume=True, **settings))

    straight = read_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    resumed = read_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert straight["metrics"] == resumed["metrics"]
    log = json.loads((tmp_path / "resumed" / METRICS_NAME).read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    # a different seed really changes the run (the comparison above can fail)
    train(TrainConfig(out=tmp_path / "other", **{**settings, "seed": 6, "epochs": 1}))
    other = read_checkpoint(tmp_path / "other" / CHECKPOINT_NAME)["state_dict"]
    assert not torch.equal(other["conv2.weight"], straight["state_dict"]["conv2.weight"])


def _cli(argv) -> int:
    parser = argparse.ArgumentParser(prog="asqhw")
    quant.cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as err:
        print(f"asqhw: error: {err}")
        return 2


@pytest.mark.train
def test_cli_train_preset_and_eval_json(trained, tmp_path, capsys):
    init = str(trained["root"] / "digits-fp" / CHECKPOINT_NAME)
    out = tmp_path / "digits-b4"
    assert _cli(["train", "--preset", "digits-b4", "--epochs", "2", "--init", init, "--out", str(out)]) == 0
    capsys.readouterr()
    assert _cli(["eval", str(out / CHECKPOINT_NAME), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model, meta = load_checkpoint(out / CHECKPOINT_NAME)
    assert (result["scheme"], result["bits"], meta["epoch"]) == ("asq+post", 4, 2)
    assert result["top1"] == pytest.approx(_independent_top1(model))
    assert 0 <= result["top1"] <= result["top5"] <= 100


@pytest.mark.train
def test_init_from_a_plain_state_dict(tmp_path):
    # a user's torchvision-style checkpoint: just the float model's state_dict
    torch.manual_seed(3)
    float_model = build_model("digits")
    torch.save(float_model.state_dict(), tmp_path / "plain.pth")
    model, _ = run_training(TrainConfig(model="digits", scheme="lsq", bits=4, out=tmp_path / "q", epochs=1,
                                        init=str(tmp_path / "plain.pth")))
    assert not (tmp_path / "digits-fp").exists()  # no full-precision run was needed
    assert model.conv1.weight.shape == float_model.conv1.weight.shape
    with pytest.raises(UserError, match="does not fit the model"):
        train(TrainConfig(model="resnet20", scheme="lsq", bits=4, out=tmp_path / "r", epochs=1,
                          init=str(tmp_path / "plain.pth")))


def test_cli_user_errors(tmp_path, capsys):
    assert _cli(["train", "--preset", "digits-b3", "--bits", "4", "--out", str(tmp_path)]) == 2
    assert "--preset digits-b3 means --bits 3" in capsys.readouterr().out
    assert _cli(["train", "--scheme", "asq+pot", "--bits", "3", "--out", str(tmp_path)]) == 2
    assert "'asq+pot' is unknown" in capsys.readouterr().out
    assert _cli(["train", "--bits", "9", "--out", str(tmp_path)]) == 2
    assert "bit width 9" in capsys.readouterr().out
    assert _cli(["train", "--scheme", "asq", "--bits", "3", "--init", str(tmp_path / "no.pt"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "no.pt does not exist" in capsys.readouterr().out
    assert _cli(["train", "--resume", "--bits", "3", "--out", str(tmp_path / "fresh")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_cli_overhead_resnet18_against_paper_table_1(capsys):
    assert _cli(["overhead", "--model", "resnet18", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    # adapter inputs of ResNet-18's 19 middle convs: 6 x 64, 5 x 128, 5 x 256, 3 x 512 channels
    by_hand = sum(n * (c * c // 4 + c // 2 + 1) for n, c in [(6, 64), (5, 128), (5, 256), (3, 512)])
    assert table["adapter_params"] == by_hand == 307_091
    assert table["model_params"] == 11_689_512
    for row in table["rows"]:
        assert row["param_pct"] == pytest.approx(row["paper_param_pct"], rel=0.02)
        assert round(row["compute_pct"], 2) == pytest.approx(row["paper_compute_pct"], abs=0.011)


# ---------------------------------------------------------------- data-parallel (2 processes, gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, init: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = TrainConfig(model="digits", scheme="asq", bits=4, out=out, epochs=2, init=init, device="cpu")
    model, metrics = run_training(config)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.train
def test_distributed_data_parallel_two_cpu_processes(trained, tmp_path):
    init = str(trained["root"] / "digits-fp" / CHECKPOINT_NAME)
    tmp_path.mkdir(exist_ok=True)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), init), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name  # gradients were averaged: replicas agree
    model, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert meta["epoch"] == 2 and meta["metrics"]["top1"] >= 95.0
    assert meta["metrics"]["top1"] == pytest.approx(_independent_top1(model))


# ---------------------------------------------------------------- nothing lost, progress, determinism


def _saved_run(out, epoch: int, epochs: int):
    """A float checkpoint in ``out`` as if ``epoch`` of ``epochs`` epochs had run; returns its bytes."""
    from quant.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(out / CHECKPOINT_NAME, build_model("digits"),
                    {"model": "digits", "scheme": "fp", "bits": None, "epoch": epoch, "epochs": epochs,
                     "complete": epoch == epochs})
    return (out / CHECKPOINT_NAME).read_bytes()


@pytest.mark.parametrize("epoch, state", [(2, "a finished run (2 of 2 epochs)"),
                                          (1, "an unfinished run (1 of 2 epochs)")])
def test_train_into_a_folder_with_a_checkpoint_is_refused(tmp_path, capsys, epoch, state):
    before = _saved_run(tmp_path, epoch, 2)
    assert _cli(["train", "--scheme", "fp", "--epochs", "2", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().out.strip()
    assert message == (f"asqhw: error: {tmp_path / CHECKPOINT_NAME} already holds {state}: pass --resume to "
                       "continue it or --force to start over (replacing it)")
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert _cli(["train", "--scheme", "fp", "--resume", "--force", "--out", str(tmp_path)]) == 2
    assert "give one of them" in capsys.readouterr().out
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before


def test_force_starts_over_and_progress_shows_one_line_per_epoch(tmp_path, capsys):
    before = _saved_run(tmp_path, 2, 2)
    assert _cli(["train", "--scheme", "fp", "--epochs", "2", "--force", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() != before
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["config"]["force"] is True
    # stderr is no terminal under pytest, so tqdm hides its bar: plain lines instead
    lines = [line for line in out.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == ["digits fp epoch 1/2", "digits fp epoch 2/2"]
    assert all("test top-1" in line for line in lines)


def test_float_pretraining_announces_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(train_module.RECIPES, "digits", {**train_module.RECIPES["digits"], "fp": (1, 0.05, 64)})
    assert _cli(["train", "--bits", "3", "--epochs", "1", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"asqhw train: no --init given; first float pre-training of digits on digits: 1 epochs, "
                      f"lr 0.05, batch 64, seed 0 (--pretrain-epochs N sets it, 0 skips it), in "
                      f"{tmp_path / 'digits-fp'}, which later runs with the same settings reuse; then asq+post "
                      f"3-bit training: 1 epochs, lr 0.02, batch 64")
    assert out[1].startswith("digits fp epoch 1/1:") and out[2].startswith("digits asq+post 3-bit epoch 1/1:")


def _epochs_run(folder) -> list:
    log = json.loads((folder / METRICS_NAME).read_text())
    return [entry["epoch"] for entry in log["epochs"]]


def test_pretraining_options_are_honoured_and_reused(tmp_path, capsys):
    quick = ["train", "--bits", "3", "--epochs", "1"]
    assert _cli([*quick, "--pretrain-epochs", "2", "--pretrain-lr", "0.03", "--pretrain-batch-size", "32",
                 "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("asqhw train: no --init given; first float pre-training of digits on digits: "
                             "2 epochs, lr 0.03, batch 32, seed 0")
    assert [line.split(":")[0] for line in out[1:4]] == ["digits fp epoch 1/2", "digits fp epoch 2/2",
                                                         "digits asq+post 3-bit epoch 1/1"]
    fp_folder = tmp_path / "digits-fp"
    assert _epochs_run(fp_folder) == [1, 2] and _epochs_run(tmp_path / "a") == [1]
    fp = read_checkpoint(fp_folder / CHECKPOINT_NAME)
    assert (fp["config"]["epochs"], fp["config"]["lr"], fp["config"]["batch_size"]) == (2, 0.03, 32)
    quantized = read_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["config"]
    assert (quantized["pretrain_epochs"], quantized["pretrain_lr"], quantized["pretrain_batch_size"]) == (2, 0.03, 32)
    assert (quantized["epochs"], quantized["lr"], quantized["batch_size"]) == (1, 0.02, 64)
    # the same pre-training settings reuse the cached float model, and say so
    before = (fp_folder / CHECKPOINT_NAME).read_bytes()
    assert _cli([*quick, "--pretrain-epochs", "2", "--pretrain-lr", "0.03", "--pretrain-batch-size", "32",
                 "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.startswith(
        f"asqhw train: reusing the float pre-training of digits on digits (2 epochs, lr 0.03, batch 32, seed 0; "
        f"top-1 {fp['metrics']['top1']:.2f} %) from {fp_folder}\n")
    assert (fp_folder / CHECKPOINT_NAME).read_bytes() == before
    # other settings are refused, not silently served the cached ones
    assert _cli([*quick, "--pretrain-epochs", "3", "--out", str(tmp_path / "c")]) == 2
    message = capsys.readouterr().out
    assert "holds a float pre-training with 2 epochs, lr 0.03, batch 32, seed 0; this run asks for 3 epochs, " \
        "lr 0.05, batch 64, seed 0" in message and f"--init {fp_folder / CHECKPOINT_NAME}" in message
    assert not (tmp_path / "c").exists() and (fp_folder / CHECKPOINT_NAME).read_bytes() == before


def test_a_killed_pretraining_is_continued(tmp_path, capsys, monkeypatch):
    real_epoch = train_module._train_epoch

    def killed_in_the_second_float_epoch(net, loader, optimizer, config, ctx, epoch, total_steps):
        if config.scheme == "fp" and epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(net, loader, optimizer, config, ctx, epoch, total_steps)

    argv = ["train", "--bits", "3", "--epochs", "1", "--pretrain-epochs", "2", "--out", str(tmp_path / "q")]
    monkeypatch.setattr(train_module, "_train_epoch", killed_in_the_second_float_epoch)
    with pytest.raises(KeyboardInterrupt):
        _cli(argv)
    assert read_checkpoint(tmp_path / "digits-fp" / CHECKPOINT_NAME)["epoch"] == 1
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)
    capsys.readouterr()
    assert _cli(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("asqhw train: no --init given; continuing the unfinished float pre-training of digits "
                             "on digits: 2 epochs, lr 0.05, batch 64, seed 0")
    assert out[1].startswith("digits fp epoch 2/2:") and out[2].startswith("digits asq+post 3-bit epoch 1/1:")
    assert _epochs_run(tmp_path / "digits-fp") == [1, 2]


def test_pretrain_epochs_0_starts_from_random_initialisation(tmp_path, capsys):
    assert _cli(["train", "--bits", "3", "--epochs", "1", "--pretrain-epochs", "0", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("asqhw train: --pretrain-epochs 0: no float pre-training; digits asq+post starts from random "
                      "initialisation")
    assert out[1].startswith("digits asq+post 3-bit epoch 1/1:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no float run
    config = read_checkpoint(tmp_path / "q" / CHECKPOINT_NAME)["config"]
    assert (config["pretrain_epochs"], config["pretrain_lr"], config["init"]) == (0, None, None)


@pytest.mark.parametrize("argv, message", [
    (["--bits", "3", "--pretrain-epochs", "2", "--init", "x.pt"], "--pretrain-epochs sets the float pre-training, "
     "which --init replaces: give one of them"),
    (["--scheme", "fp", "--pretrain-epochs", "2"], "a --scheme fp run is itself float training"),
    (["--bits", "3", "--pretrain-epochs", "-1"], "--pretrain-epochs -1 must be a whole number >= 0"),
    (["--bits", "3", "--pretrain-epochs", "0", "--pretrain-lr", "0.1"], "--pretrain-lr sets a float pre-training "
     "that --pretrain-epochs 0 skips"),
    (["--bits", "3", "--pretrain-lr", "0"], "--pretrain-lr 0.0 must be positive"),
    (["--model", "digits", "--data", "digits32", "--bits", "3"], "--data digits32 (the digits images at 32x32x3) "
     "is for the CIFAR-10 models (resnet20); digits takes digits images"),
])
def test_pretraining_option_errors(tmp_path, capsys, argv, message):
    assert _cli(["train", *argv, "--out", str(tmp_path / "q")]) == 2
    assert message in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_resnet20_on_digits32_says_it_is_not_cifar10(tmp_path, capsys, monkeypatch):
    # a slice of digits32 keeps this quick; the full set is the same code path
    import quant.data

    full = quant.data.digits32_split()
    monkeypatch.setattr(quant.data, "digits32_split", lambda: (full[0][:64], full[1][:64], full[2][:32], full[3][:32]))
    assert _cli(["train", "--model", "resnet20", "--data", "digits32", "--bits", "3", "--epochs", "1",
                 "--pretrain-epochs", "1", "--batch-size", "32", "--pretrain-batch-size", "32",
                 "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out.splitlines()
    label = "digits32 (sklearn's 8x8 digits upsampled to 32x32x3; NOT CIFAR-10)"
    assert out[0].startswith(f"asqhw train: no --init given; first float pre-training of resnet20 on {label}: "
                             "1 epochs, lr 0.1, batch 32")
    assert str(tmp_path / "resnet20-digits32-fp") in out[0]
    assert out[1].startswith("resnet20 fp epoch 1/1:") and out[1].endswith(f" on {label}")
    assert out[2].startswith("resnet20 asq+post 3-bit epoch 1/1:") and out[2].endswith(f" on {label}")
    assert out[3].startswith(f"resnet20 asq+post bits=3 on {label}: test top-1 ")
    assert json.loads((tmp_path / "q" / METRICS_NAME).read_text())["data"] == label
    model, meta = load_checkpoint(tmp_path / "q" / CHECKPOINT_NAME)
    assert meta["data"] == label and meta["config"]["data"] == "digits32"
    # the digits' lossless input coding: pixels 0..16 -> codes 8 (p - 8) on conv1's fixed step
    pixels = torch.arange(17, dtype=torch.float32).view(1, 1, 17, 1).expand(1, 3, 17, 1) / 16
    codes = model.conv1.act_quant.codes(model.normalise(pixels))
    assert codes[0, 0, :, 0].tolist() == [8 * (p - 8) for p in range(17)]
    assert _cli(["eval", str(tmp_path / "q" / CHECKPOINT_NAME)]) == 0
    assert capsys.readouterr().out.startswith(f"resnet20 asq+post bits=3 on {label}: top-1 ")


@pytest.mark.parametrize("bits", [3, 4])
def test_shipped_resnet20_digits32_checkpoints(bits, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / "checkpoints" / f"resnet20-digits32-b{bits}.pt"
    payload = read_checkpoint(path)
    assert payload["optimizer"] is None and path.stat().st_size < 1_500_000  # the state, not the momentum
    model, meta = load_checkpoint(path)
    assert (meta["model"], meta["scheme"], meta["bits"], meta["complete"]) == ("resnet20", "asq+post", bits, True)
    assert meta["data"] == "digits32 (sklearn's 8x8 digits upsampled to 32x32x3; NOT CIFAR-10)"
    assert (meta["config"]["data"], meta["config"]["seed"], meta["config"]["threads"]) == ("digits32", 0, 1)
    assert _cli(["eval", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == meta["data"] and result["top1"] == pytest.approx(meta["metrics"]["top1"])
    assert result["top1"] >= 97.0


# ---------------------------------------------------------------- make train (no data, no setup: make -n)


def _make_train(*variables):
    """``make -n train VARIABLES`` in the repository: (return code, output, the asqhw train command)."""
    import shlex
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["make", "--no-print-directory", "-n", "train", *variables], cwd=root,
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if " train " in line and "asqhw" in line]
    return done.returncode, done.stdout + done.stderr, shlex.split(lines[-1])[1:] if lines else None


def test_make_train_keeps_the_digits_command_and_adds_resnet20(tmp_path):
    assert _make_train("BITS=3")[2] == ["train", "--preset", "digits-b3", "--out", "build/train/digits-b3"]
    assert _make_train("BITS=3", "DATA=digits-vary", "RESUME=1")[2] == [
        "train", "--preset", "digits-b3", "--data", "digits-vary", "--out", "build/train/digits-vary-b3", "--resume"]
    assert _make_train("MODEL=resnet20", "DATA=digits32", "BITS=4")[2] == [
        "train", "--model", "resnet20", "--bits", "4", "--data", "digits32", "--out",
        "build/train/resnet20-digits32-b4"]
    assert _make_train("MODEL=resnet20", "DATA=cifar10", f"DATA_DIR={tmp_path} x", "FORCE=1")[2] == [
        "train", "--model", "resnet20", "--bits", "3", "--data", f"{tmp_path} x", "--out",
        "build/train/resnet20-cifar10-b3", "--force"]


@pytest.mark.parametrize("variables, message", [
    (("MODEL=resnet20", "DATA=cifar10"), "make train MODEL=resnet20 DATA=cifar10 needs DATA_DIR=<folder holding "
     "cifar-10-batches-py"),
    (("MODEL=resnet20",), "make train MODEL=resnet20 takes DATA=digits32 (the digits images at 32x32x3, offline; "
     "NOT CIFAR-10) or DATA=cifar10 DATA_DIR=<folder>, not DATA=digits"),
    (("MODEL=resnet18",), "MODEL is digits (default) or resnet20"),
])
def test_make_train_refuses_before_setup(variables, message):
    code, output, command = _make_train(*variables)
    assert code != 0 and message in output and command is None


def test_make_train_cifar10_without_the_data_gives_the_data_error(tmp_path, capsys):
    # make passes the folder on; the train command refuses it before any work
    _, _, command = _make_train("MODEL=resnet20", "DATA=cifar10", f"DATA_DIR={tmp_path / 'cifar'}",
                                "BITS=3")
    command[command.index("--out") + 1] = str(tmp_path / "out")
    assert _cli(command) == 2
    assert f"no CIFAR-10 data under {tmp_path / 'cifar'}: expected the python version's folder " \
        "'cifar-10-batches-py'" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_weights_do_not_depend_on_the_thread_count(tmp_path):
    threads = torch.get_num_threads()
    states = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # what the machine offers; training runs on one thread regardless
            model, _ = run_training(TrainConfig(model="digits", scheme="fp", bits=None, out=tmp_path / f"t{n}",
                                                epochs=2, seed=4))
            assert torch.get_num_threads() == n  # restored after training
            states.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    with pytest.raises(UserError, match="--threads 0"):
        TrainConfig(model="digits", scheme="fp", bits=None, out=tmp_path, threads=0).resolved()

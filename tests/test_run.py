"""Both training stages through run.py as a user calls it, on the CPU: outputs, exact resume, SIGTERM, two
processes on torch.distributed (gloo), and the command line's errors."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import losses
import run
from checkpoint import load_checkpoint, read_checkpoint
from config import load_config
from modules.build import build_models
from tiny_training import make_tiny_dataset, write_tiny_config
from trainer import TrainingInterrupted

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


def run_script(*args, timeout=120):
    """``python run.py ARGS`` from the repository root; returns the completed process."""
    return subprocess.run([sys.executable, "run.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def only_dir(folder):
    runs = [p for p in Path(folder).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_both_stages_through_run_py(data_root, tmp_path):
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    logs = tmp_path / "log"
    done = run_script("--config", config, "--log_dir", logs, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    run_dir = only_dir(logs)
    assert " " not in run_dir.name and run_dir.name.startswith("tiny_")
    assert load_config(run_dir / "tiny.yaml") == load_config(config)  # the resolved config, copied in
    assert {p.name for p in run_dir.glob("*.pth")} == {"00000000-cpk-reconstruction.pth",
                                                       "00000001-cpk-reconstruction.pth"}
    assert {p.name for p in (run_dir / "train-vis").iterdir()} == {"00000000-rec.png", "00000001-rec.png"}
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert [line[:10] for line in lines] == ["00000000) ", "00000001) "] and "equivariance_affine - " in lines[0]
    assert (run_dir / "losses.jsonl").is_file() and (run_dir / "loss-curve-reconstruction.png").is_file()

    done = run_script("--config", config, "--mode", "train_avd", "--device", "cpu",
                      "--checkpoint", run_dir / "00000001-cpk-reconstruction.pth")
    assert done.returncode == 0, done.stderr
    assert (run_dir / "00000000-cpk-avd.pth").is_file() and (run_dir / "train-vis" / "00000000-avd.png").is_file()
    assert only_dir(logs) == run_dir  # the AVD stage continued in the checkpoint's folder
    assert (run_dir / "log.txt").read_text().splitlines()[-1].startswith("00000000) shift - ")
    # The AVD checkpoint is a complete checkpoint for the evaluation modes.
    config_dict = load_config(config)
    load_checkpoint(run_dir / "00000000-cpk-avd.pth", build_models(config_dict), config_name=str(config))


def _checkpoint_tensors(path):
    checkpoint = read_checkpoint(path)
    return checkpoint, {f"{name}.{k}": v for name in ("generator", "region_predictor", "bg_predictor")
                        for k, v in checkpoint[name].items()}


@pytest.mark.slow
def test_resume_is_exact(data_root, tmp_path):
    two = write_tiny_config(tmp_path / "two.yaml", data_root)
    one = write_tiny_config(tmp_path / "one.yaml", data_root, train_params={"num_epochs": 1})
    straight = run.main(["--config", two, "--log_dir", tmp_path / "a", "--device", "cpu", "--seed", "3"])
    first = run.main(["--config", one, "--log_dir", tmp_path / "b", "--device", "cpu", "--seed", "3"])
    assert first.name == "00000000-cpk-reconstruction.pth"
    resumed = run.main(["--config", two, "--checkpoint", first, "--device", "cpu", "--seed", "3"])
    assert resumed == first.parent / "00000001-cpk-reconstruction.pth"

    a, a_tensors = _checkpoint_tensors(straight)
    b, b_tensors = _checkpoint_tensors(resumed)
    assert a_tensors.keys() == b_tensors.keys()
    for key in a_tensors:  # weights and batch-norm statistics, bit for bit
        assert torch.equal(a_tensors[key], b_tensors[key]), key
    assert a["epoch_reconstruction"] == b["epoch_reconstruction"] == 1
    assert a["scheduler_reconstruction"] == b["scheduler_reconstruction"]
    assert a["optimizer_reconstruction"]["param_groups"] == b["optimizer_reconstruction"]["param_groups"]
    for state_a, state_b in zip(a["optimizer_reconstruction"]["state"].values(),
                                b["optimizer_reconstruction"]["state"].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    lines = (first.parent / "log.txt").read_text().splitlines()
    assert [line[:10] for line in lines] == ["00000000) ", "00000001) "]  # continued at the next epoch


@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [False, True], ids=["process", "process-group"])
def test_sigterm_writes_a_loadable_checkpoint(data_root, tmp_path, whole_group):
    """SIGTERM to the trainer, or to its whole process group with data workers (a cluster's job stop, pkill -f)."""
    config = write_tiny_config(tmp_path / "long.yaml", data_root,
                               train_params={"num_epochs": 1000, "checkpoint_freq": 1000,
                                             "dataloader_workers": 1 if whole_group else 0})
    logs = tmp_path / "log"
    process = subprocess.Popen([sys.executable, "run.py", "--config", str(config), "--log_dir", str(logs),
                                "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not list(logs.glob("*/log.txt")):  # an epoch has finished
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        if whole_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by SIGTERM" in stderr
    saved = list(logs.glob("*/*-interrupted-cpk-reconstruction.pth"))
    assert len(saved) == 1, stderr
    checkpoint = load_checkpoint(saved[0], {k: v for k, v in build_models(load_config(config)).items()
                                            if k != "avd_network"})
    epoch = checkpoint["interrupted_at"]["epoch"]
    assert epoch >= 1 and checkpoint["epoch_reconstruction"] == epoch - 1
    assert saved[0].name == f"{epoch:08d}-interrupted-cpk-reconstruction.pth"
    assert not list(saved[0].parent.glob("*.tmp"))


@pytest.fixture
def python_sigint():
    """SIGINT as Python sets it up in a terminal, whatever this process inherited (``nohup ... &`` ignores it)."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("inherited", ["terminal", "ignored (nohup ... &)"])
def test_interrupt_handler_in_process(data_root, tmp_path, monkeypatch, python_sigint, inherited):
    """SIGINT (Ctrl-C) on the first step: the step finishes, a checkpoint is written, TrainingInterrupted says so;
    the disposition found before is put back."""
    import trainer
    if inherited != "terminal":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    before = signal.getsignal(signal.SIGINT)
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    original = trainer.summarise_step

    def interrupted_step(losses, stop_requested, device):
        if stop_requested is None:
            os.kill(os.getpid(), signal.SIGINT)
            stop_requested = "SIGINT"
        return original(losses, stop_requested, device)
    monkeypatch.setattr(trainer, "summarise_step", interrupted_step)
    with pytest.raises(TrainingInterrupted) as error:
        run.main(["--config", config, "--log_dir", tmp_path / "log", "--device", "cpu"])
    assert error.value.exit_code == 130
    saved = list((tmp_path / "log").glob("*/00000000-interrupted-cpk-reconstruction.pth"))
    assert len(saved) == 1 and read_checkpoint(saved[0])["interrupted_at"] == {"epoch": 0, "iteration": 0}
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, ports, config, logs, out_dir):
    """One process of a 2-process gloo group, as torchrun would set it up: both stages through run.main."""
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    built = {}
    build = run.build_models

    def capture(*args, **kwargs):  # keep this process's networks to compare them afterwards
        built.update(build(*args, **kwargs))
        return built
    run.build_models = capture
    os.environ["MASTER_PORT"] = str(ports[0])
    run.main(["--config", config, "--log_dir", logs, "--device", "cpu"])
    first_stage = {k: [p.detach().clone() for p in built[k].parameters()] for k in built}
    checkpoint = only_dir(logs) / "00000000-cpk-reconstruction.pth"  # written before the epoch's last barrier
    os.environ["MASTER_PORT"] = str(ports[1])
    run.main(["--config", config, "--mode", "train_avd", "--checkpoint", checkpoint, "--device", "cpu"])
    avd = [p.detach().clone() for p in built["avd_network"].parameters()]
    torch.save({"first_stage": first_stage, "avd": avd}, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_with_gloo(data_root, tmp_path):
    config = write_tiny_config(tmp_path / "ddp.yaml", data_root,
                               train_params={"num_epochs": 1, "batch_size": 4, "num_repeats": 4},
                               train_avd_params={"batch_size": 4, "num_repeats": 4})
    logs = tmp_path / "log"
    mp.spawn(_distributed_worker, args=(2, (_free_port(), _free_port()), str(config), str(logs), str(tmp_path)),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, params in ranks[0]["first_stage"].items():
        for a, b in zip(params, ranks[1]["first_stage"][name]):
            assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["avd"], ranks[1]["avd"]))
    initial = build_models(load_config(config))["generator"]  # the ranks did train
    assert not all(torch.equal(a, b) for a, b in zip(initial.parameters(), ranks[0]["first_stage"]["generator"]))
    run_dir = only_dir(logs)  # one folder, one set of files, one log line per epoch and stage
    assert {p.name for p in run_dir.glob("*.pth")} == {"00000000-cpk-reconstruction.pth", "00000000-cpk-avd.pth"}
    assert len((run_dir / "log.txt").read_text().splitlines()) == 2
    assert len(list((run_dir / "train-vis").iterdir())) == 2
    saved = read_checkpoint(run_dir / "00000000-cpk-reconstruction.pth")["generator"]
    names = [name for name, _ in initial.named_parameters()]
    assert all(torch.equal(saved[n], p) for n, p in zip(names, ranks[0]["first_stage"]["generator"]))


def test_offline_vgg_stops_before_the_first_step(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(losses, "_reachable", lambda url, timeout=5.0: False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("a download was attempted"))
    config = write_tiny_config(tmp_path / "imagenet.yaml", data_root, train_params={"vgg_weights": "imagenet"})
    assert run.cli(["--config", str(config), "--log_dir", str(tmp_path / "log"), "--device", "cpu"]) == 1
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "vgg19-dcbb9e9d.pth" in message and "vgg_weights: random" in message
    assert str(config) in message and "Traceback" not in message
    assert not any((tmp_path / "log").iterdir())  # the new run's folder, holding only its config copy, is gone


def test_missing_dataset_leaves_no_run_folder(tmp_path, capsys):
    config = write_tiny_config(tmp_path / "tiny.yaml", tmp_path / "no-such-data")
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "earlier-run").mkdir()  # someone else's folder stays
    assert run.cli(["--config", str(config), "--log_dir", str(tmp_path / "log"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-data" in err and "Traceback" not in err
    assert [p.name for p in (tmp_path / "log").iterdir()] == ["earlier-run"]


@pytest.mark.parametrize("argv, expected", [
    (["--mode", "reconstruction"], "--mode reconstruction needs --checkpoint"),
    (["--mode", "train_avd"], "--mode train_avd needs --checkpoint"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--mode", "reconstruction", "--compile"], "--compile is for --mode train; --mode reconstruction runs"),
    (["--checkpoint", "nowhere/00000009-cpk-reconstruction.pth"],
     "00000009-cpk-reconstruction.pth: checkpoint file not found"),
])
def test_command_line_errors(data_root, tmp_path, capsys, argv, expected):
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    assert run.cli(["--config", str(config), "--log_dir", str(tmp_path / "log"), *argv]) == 1
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "log").exists()  # refused before making a run folder


@pytest.mark.parametrize("argv, expected", [([], False), (["--compile"], "default"),
                                            (["--compile", "reduce-overhead"], "reduce-overhead")])
def test_compile_reaches_the_first_stage(argv, expected, data_root, tmp_path, monkeypatch):
    import train
    calls = []
    monkeypatch.setattr(train, "train", lambda **kwargs: calls.append(kwargs) or "done")
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    assert run.main(["--config", config, "--device", "cpu", "--log_dir", tmp_path / "log", *argv]) == "done"
    assert calls[0]["compile"] == expected


def test_missing_config_is_named(tmp_path, capsys):
    assert run.cli(["--config", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["reconstruction", "animate"])
def test_evaluation_modes_are_dispatched_with_the_shared_signature(mode, data_root, tmp_path, monkeypatch):
    import importlib
    module = importlib.import_module(mode)
    calls = []
    monkeypatch.setattr(module, mode, lambda **kwargs: calls.append(kwargs) or "done")
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    (root / "train").symlink_to(data_root / "train")
    (root / "test" / "video0").symlink_to(data_root / "train" / "video0")
    config = write_tiny_config(tmp_path / "tiny.yaml", root)
    checkpoint = tmp_path / "run" / "model.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"read by the mode itself")
    checkpoint.parent.chmod(0o555)  # a checkpoint in a read-only folder: outputs go to --log_dir instead
    try:
        assert run.main(["--config", config, "--mode", mode, "--checkpoint", checkpoint, "--device", "cpu",
                         "--log_dir", tmp_path / "eval"]) == "done"
    finally:
        checkpoint.parent.chmod(0o755)
    kwargs, = calls
    assert set(kwargs) == {"config", "models", "checkpoint_path", "log_dir", "dataset", "device", "config_name",
                           "precision"}
    assert kwargs["precision"] == "fp32"  # --precision's default
    assert kwargs["log_dir"] == tmp_path / "eval" and kwargs["checkpoint_path"] == str(checkpoint)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.pth"]
    assert not kwargs["dataset"].is_train and kwargs["dataset"].videos == ["video0"]
    assert set(kwargs["models"]) == {"generator", "region_predictor", "bg_predictor", "avd_network"}


@pytest.mark.parametrize("case", ["file", "under-a-file", "read-only"])
def test_log_dir_that_cannot_hold_a_run_is_one_error_line(data_root, tmp_path, capsys, monkeypatch, case):
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    log_dir = tmp_path / "log"
    if case == "read-only":
        log_dir.mkdir()
        if os.geteuid() == 0:  # root writes anywhere: refuse the mkdir as the file system would
            refused = Path.mkdir

            def mkdir(path, *args, **kwargs):
                if path.parent == log_dir:
                    raise PermissionError(13, "Permission denied", str(path))
                return refused(path, *args, **kwargs)
            monkeypatch.setattr(Path, "mkdir", mkdir)
        else:
            log_dir.chmod(0o555)
    else:
        log_dir.write_text("a file where the runs should go")
        log_dir = log_dir / "runs" if case == "under-a-file" else log_dir
    try:
        assert run.cli(["--config", config, "--log_dir", log_dir, "--device", "cpu"]) == 1
    finally:
        (tmp_path / "log").chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"error: --log_dir {log_dir}: ") and err.count("\n") == 1 and "Traceback" not in err
    assert ("permission denied" if case == "read-only" else "expected a folder") in err


def test_resuming_in_a_read_only_folder_is_one_error_line(data_root, tmp_path, capsys, monkeypatch):
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    checkpoint = tmp_path / "published" / "00000000-cpk-reconstruction.pth"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"not read: the folder is refused first")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != checkpoint.parent)
    assert run.cli(["--config", config, "--checkpoint", checkpoint, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {checkpoint.parent}: training continues in the checkpoint's folder, which is not "
                   f"writable: copy the checkpoint into a folder you can write to\n")


def test_evaluating_into_a_read_only_log_dir_is_one_error_line(data_root, tmp_path, capsys, monkeypatch):
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root)
    (tmp_path / "eval").mkdir()
    (tmp_path / "model.pth").write_bytes(b"not read: the folder is refused first")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "eval")
    assert run.cli(["--config", config, "--mode", "reconstruction", "--checkpoint", tmp_path / "model.pth",
                    "--log_dir", tmp_path / "eval", "--device", "cpu"]) == 1
    assert capsys.readouterr().err == (f"error: --log_dir {tmp_path / 'eval'}: the folder is not writable; choose "
                                       f"a --log_dir you can write to\n")


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """Another run makes the chosen folder between the choice and the mkdir; several runs start at once."""
    monkeypatch.setattr(run.time, "strftime", lambda fmt: "20260101-000000")
    args = run.parse_args(["--config", "tiny.yaml", "--log_dir", tmp_path])
    make = Path.mkdir

    def another_run_first(path, *a, **k):
        if path.name == "tiny_20260101-000000" and not path.exists():
            make(path)  # the other run wins the race for this name
        return make(path, *a, **k)
    monkeypatch.setattr(Path, "mkdir", another_run_first)
    assert run.make_log_dir(args, 0).name == "tiny_20260101-000000-2"
    monkeypatch.setattr(Path, "mkdir", make)

    start, folders = threading.Barrier(8), []

    def start_run():
        start.wait()
        folders.append(run.make_log_dir(args, 0))
    threads = [threading.Thread(target=start_run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 8 and all(folder.is_dir() for folder in folders)


def test_unreadable_training_data_is_one_error_line(data_root, tmp_path, capsys, monkeypatch):
    """The dataset's own error, raised in a data worker, reaches the user as one line, and the run exits."""
    from frames_dataset import VideoReadError

    class Unreadable(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise VideoReadError("none of the 4 training videos in data/x is readable")
    monkeypatch.setattr(run, "make_dataset", lambda *args: Unreadable())
    config = write_tiny_config(tmp_path / "tiny.yaml", data_root, train_params={"dataloader_workers": 1})
    assert run.cli(["--config", config, "--log_dir", tmp_path / "log", "--device", "cpu"]) == 1
    err = capsys.readouterr().err  # after the progress bar's line
    assert err.endswith("\rerror: none of the 4 training videos in data/x is readable\n") and "Traceback" not in err
    assert err.count("\n") == 1

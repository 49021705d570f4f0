"""`train.strategy: multiworker` for real: two worker processes on 127.0.0.1, one TF_CONFIG
each, train through the project's own code (runtime.distribution_strategy, the store
pipeline, train_two_phase) and must end with identical weights; killed after an epoch and
started again, they must end where an uninterrupted pair ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from train_configs import BASE

WORKER = textwrap.dedent("""
    import os
    import signal
    import sys
    import time
    import numpy as np
    from cxr.training import runtime
    runtime.configure(seed=3)
    strategy = runtime.distribution_strategy("multiworker")  # reads TF_CONFIG
    from cxr.data.loading import Augmentation, make_dataset_from_store
    from cxr.models import build
    from cxr.training.fit import TrainConfig, train_two_phase
    from cxr.training.losses import build_loss
    def train_config(**overrides):  # the tests' base (tests/train_configs.py)
        return TrainConfig(**{**BASE, **overrides})
    out, checkpoints = sys.argv[1], sys.argv[2]
    epochs, kill_after = int(sys.argv[3]), int(sys.argv[4])  # kill_after 0: never
    with strategy.scope():
        model = build("simple_cnn", image_size=32)
    initial = model.get_weights()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 32, 32), dtype=np.uint8)
    labels = (rng.random((96, 14)) < 0.3).astype(np.float32)
    augmentation = Augmentation(flip=True, rotation=0.0, zoom=0.0, brightness=0.1)

    def train_data(phase, epoch):  # the global batch of 16: 8 per worker
        return make_dataset_from_store(images, np.arange(64), labels[:64], 16, training=True,
                                       augmentation=augmentation, seed=3, epoch=(phase, epoch))

    val = make_dataset_from_store(images, np.arange(64, 96), labels[64:], 16)
    def on_epoch(phase, row):  # after the epoch's checkpoint: a kill, as a preemption
        if row["epoch"] == kill_after:
            print("KILLED AFTER EPOCH", kill_after, flush=True)
            time.sleep(2)  # let the other worker reach the same point
            os.kill(os.getpid(), signal.SIGKILL)

    history = train_two_phase(model, train_data, val, build_loss("focal"),
                              train_config(head_epochs=epochs, finetune_epochs=0), checkpoints,
                              on_epoch=on_epoch, strategy=strategy, seed=3, verbose=2)
    np.savez(out, *model.get_weights())
    np.savez(out.replace(".npz", "_initial.npz"), *initial)
    print("REPLICAS", strategy.num_replicas_in_sync, "EPOCHS", len(history["head"]))
""")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_pair(tmp_path, run: str, checkpoints, epochs: int, kill_after: int = 0):
    """Two workers of one cluster on fresh ports; (return codes, logs). Weights go to
    tmp_path / f"{run}-w{index}.npz"."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers, logs = [], []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": index}})}
            log = (tmp_path / f"{run}-worker{index}.log").open("w")
            logs.append(log)
            workers.append(subprocess.Popen(
                [sys.executable, "-c", f"BASE = {BASE!r}\n" + WORKER, str(tmp_path / f"{run}-w{index}.npz"),
                 str(checkpoints), str(epochs), str(kill_after)],
                env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
        for worker in workers:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"{run}-worker{i}.log").read_text() for i in range(2)]
    return [worker.returncode for worker in workers], outputs


def weights(path):
    with np.load(path) as saved:
        return [saved[key] for key in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_lockstep(tmp_path):
    codes, outputs = run_pair(tmp_path, "run", tmp_path / "checkpoints", epochs=1)
    for index, (code, output) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"worker {index}:\n{output[-4000:]}"
        assert "REPLICAS 2 EPOCHS 1" in output, output[-4000:]
    # 64 images in global batches of 16: 4 steps, each worker computing half of every batch
    assert all("4/4" in output for output in outputs), outputs[0][-2000:]

    final = [weights(tmp_path / f"run-w{i}.npz") for i in range(2)]
    initial = weights(tmp_path / "run-w0_initial.npz")
    assert all(np.array_equal(a, b) for a, b in zip(*final, strict=True)), \
        "the workers' weights diverged"
    assert not all(np.array_equal(a, b) for a, b in zip(final[0], initial, strict=True)), \
        "nothing trained"
    # the chief writes the checkpoints; the other worker its own folder beside them
    assert (tmp_path / "checkpoints" / "head_done").exists()
    assert (tmp_path / "checkpoints.worker-1" / "head_done").exists()


@pytest.mark.slow
def test_two_workers_killed_after_an_epoch_resume_to_the_uninterrupted_weights(tmp_path):
    """Both workers SIGKILLed after epoch 1 of 2 (a preempted job), then started again on new
    ports: each resumes from its own checkpoint folder and the pair ends bit for bit where a
    pair that was never interrupted ends."""
    checkpoints = tmp_path / "resumed"
    codes, outputs = run_pair(tmp_path, "killed", checkpoints, epochs=2, kill_after=1)
    for index, (code, output) in enumerate(zip(codes, outputs, strict=True)):
        assert code == -9 and "KILLED AFTER EPOCH 1" in output, \
            f"worker {index} (code {code}):\n{output[-4000:]}"
    codes, outputs = run_pair(tmp_path, "resumed", checkpoints, epochs=2)
    for index, (code, output) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"worker {index}:\n{output[-4000:]}"
        assert "training: resuming from the checkpoints" in output, output[-4000:]
        assert "REPLICAS 2 EPOCHS 2" in output, output[-4000:]
        # only epoch 2 ran again
        assert "head epoch 1/2" not in output and "head epoch 2/2" in output, output[-4000:]
    codes, outputs = run_pair(tmp_path, "straight", tmp_path / "straight", epochs=2)
    assert codes == [0, 0], outputs[0][-4000:]

    resumed = [weights(tmp_path / f"resumed-w{i}.npz") for i in range(2)]
    straight = weights(tmp_path / "straight-w0.npz")
    for index in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(resumed[index], straight, strict=True)), \
            f"worker {index} resumed to other weights than the uninterrupted run"

"""`train.strategy: multiworker` for real: two worker processes on 127.0.0.1, one TF_CONFIG
each, train through the project's own code (runtime.distribution_strategy, the store
pipeline, train_two_phase) and must end with identical weights."""

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

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from cxr.training import runtime
    runtime.configure(seed=3)
    strategy = runtime.distribution_strategy("multiworker")  # reads TF_CONFIG
    from cxr.data.loading import Augmentation, make_dataset_from_store
    from cxr.models import build
    from cxr.training.fit import TrainConfig, train_two_phase
    from cxr.training.losses import build_loss
    out, checkpoints = sys.argv[1], sys.argv[2]
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
    history = train_two_phase(model, train_data, val, build_loss("focal"),
                              TrainConfig(head_epochs=1, finetune_epochs=0), checkpoints,
                              strategy=strategy, seed=3, verbose=2)
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


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_lockstep(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers, logs = [], []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": index}})}
            log = (tmp_path / f"worker{index}.log").open("w")
            logs.append(log)
            workers.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path / f"w{index}.npz"),
                 str(tmp_path / "checkpoints")], env=env, stdout=log, stderr=subprocess.STDOUT))
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
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for index, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, f"worker {index}:\n{output[-4000:]}"
        assert "REPLICAS 2 EPOCHS 1" in output, output[-4000:]
    # 64 images in global batches of 16: 4 steps, each worker computing half of every batch
    assert all("4/4" in output for output in outputs), outputs[0][-2000:]

    final = [np.load(tmp_path / f"w{i}.npz") for i in range(2)]
    initial = np.load(tmp_path / "w0_initial.npz")
    assert all(np.array_equal(final[0][k], final[1][k]) for k in final[0]), \
        "the workers' weights diverged"
    assert not all(np.array_equal(final[0][k], initial[k]) for k in initial), "nothing trained"
    # the chief writes the checkpoints; the other worker its own folder beside them
    assert (tmp_path / "checkpoints" / "head_done").exists()
    assert (tmp_path / "checkpoints.worker-1" / "head_done").exists()

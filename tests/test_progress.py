"""Progress lines for log files: tenths, a time interval, the end; MC dropout and the report
report through them."""

import numpy as np
import pytest

from cxr.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_at_each_tenth_and_on_reaching_the_total():
    lines, clock = [], Clock()
    done = Progress("evaluate@x: MC dropout", 1131, sink=lines.append, clock=clock)
    for _ in range(17):  # batches of 64, then 67: 1,131 images
        clock.now += 2.5
        done.advance(64)
    clock.now += 1
    done.advance(43)
    assert lines[0] == "evaluate@x: MC dropout 128/1131 images (11%), 5 s"
    assert lines[-1] == "evaluate@x: MC dropout 1131/1131 images (100%), 44 s"
    assert len(lines) == 10  # one per tenth; 64-image steps skip none
    assert all("\r" not in line for line in lines)


def test_slow_work_reports_every_interval_and_zero_work_is_silent():
    lines, clock = [], Clock()
    done = Progress("report: figures", 1000, unit="figures", sink=lines.append,
                    interval=30, clock=clock)
    for _ in range(4):
        clock.now += 20
        done.advance(1)
    assert lines == ["report: figures 2/1000 figures (0%), 40 s",
                     "report: figures 4/1000 figures (0%), 80 s"]
    done.advance(0)
    assert len(lines) == 2
    silent = Progress("x", 5, sink=None)
    silent.advance(5)
    assert silent.done == 5
    with pytest.raises(ValueError, match="total"):
        Progress("x", -1)


def test_mc_dropout_reports_every_image_once():
    from cxr.evaluation.uncertainty import mc_dropout_predict
    from cxr.models import build

    model = build("simple_cnn", image_size=32)
    images = np.random.default_rng(0).uniform(0, 255, (10, 32, 32, 3)).astype(np.float32)
    for layers in ("head", "all"):
        seen = []
        mc_dropout_predict(model, images, passes=2, batch_size=4, layers=layers,
                           progress=seen.append)
        assert seen == [4, 4, 2], layers


def test_paired_comparisons_report_each_pair():
    from cxr.labels import LABELS
    from cxr.report.summary import compare_models

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 14))
    scores = {name: rng.random((40, 14)) for name in ("a", "b", "c")}
    lines = []
    compare_models(scores, y, np.arange(40), LABELS, n_boot=5, seed=0, ci=0.95,
                   progress=lines.append)
    assert lines[0].startswith("report: paired bootstrap (5 resamples) 1/3 model pairs (33%), ")
    assert [line.split(" model pairs")[0].split(" ")[-1] for line in lines] == ["1/3", "2/3",
                                                                              "3/3"]


def test_printer_flushes_so_a_piped_log_shows_the_line_at_once(monkeypatch):
    """Redirected to a log file (`dvc repro > log`, CI) stdout is block-buffered: a plain
    print would show up only at exit."""
    import io
    import sys

    from cxr.progress import printer

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8"))
    printer("prepare: 10/100 images (10%), 1 s")
    assert raw.getvalue() == b"prepare: 10/100 images (10%), 1 s\n"

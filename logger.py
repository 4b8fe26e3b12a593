"""Training logs: per-epoch mean losses in ``log.txt`` and ``losses.jsonl``, a loss-curve PNG, and images.

``log.txt`` keeps the reference's line format, one line per epoch::

    00000012) perceptual - 95.12345; equivariance_shift - 0.12345; equivariance_affine - 0.54321

``losses.jsonl`` holds the same numbers machine-readably, one JSON object per epoch:
``{"stage": "reconstruction", "epoch": 12, "losses": {...}, "lr": 0.0002, "seconds": 81.2}``. When a run
resumes, records of epochs that are trained again replace the earlier ones in the curve. Only the process that
creates a :class:`Logger` with ``enabled=True`` (rank 0) writes anything; checkpoints are not its business.
"""
import json
import math
from collections import OrderedDict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visualizer import colormap


def format_losses(epoch, losses):
    """The reference's log line: ``00000012) name - 1.23456; name - ...``."""
    return f"{epoch:08d}) " + "; ".join(f"{name} - {value:.5f}" for name, value in losses.items())


class Logger:
    """Collects per-iteration losses of one stage ('reconstruction' or 'avd') and writes them each epoch.

    Args:
        log_dir: the run's folder.
        stage: names the records in ``losses.jsonl`` and the curve ``loss-curve-<stage>.png``.
        enabled: False on every process but rank 0: then nothing is written.
    """

    def __init__(self, log_dir, stage, enabled=True):
        self.log_dir = Path(log_dir)
        self.stage = stage
        self.enabled = enabled
        self.sums, self.count = OrderedDict(), 0
        if enabled:
            (self.log_dir / "train-vis").mkdir(parents=True, exist_ok=True)

    def log_iter(self, losses):
        """Add one iteration's losses (name -> float)."""
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.count += 1

    def log_epoch(self, epoch, lr=None, seconds=None):
        """Write the epoch's mean losses (log.txt, losses.jsonl, the curve); returns them and starts afresh."""
        means = OrderedDict((name, total / max(self.count, 1)) for name, total in self.sums.items())
        self.sums, self.count = OrderedDict(), 0
        if not self.enabled:
            return means
        with open(self.log_dir / "log.txt", "a") as f:
            print(format_losses(epoch, means), file=f)
        record = {"stage": self.stage, "epoch": epoch, "losses": means, "lr": lr, "seconds": seconds}
        with open(self.log_dir / "losses.jsonl", "a") as f:
            print(json.dumps(record), file=f)
        plot_loss_curves(self.history(), self.log_dir / f"loss-curve-{self.stage}.png",
                         title=f"{self.stage} losses (log scale)")
        return means

    def history(self):
        """{loss name: [(epoch, value), ...]} of this stage from losses.jsonl, the latest record of each epoch."""
        path = self.log_dir / "losses.jsonl"
        by_epoch = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if record.get("stage") == self.stage:
                    by_epoch[record["epoch"]] = record["losses"]
        curves = OrderedDict()
        for epoch in sorted(by_epoch):
            for name, value in by_epoch[epoch].items():
                curves.setdefault(name, []).append((epoch, value))
        return curves

    def save_image(self, name, image):
        """Write a uint8 (H, W, 3) image to ``train-vis/<name>``."""
        if self.enabled:
            iio.imwrite(self.log_dir / "train-vis" / name, image)


def _nice_ticks(low, high):
    """Ticks (log10 values) between low and high: the powers of ten, or five even steps within one decade."""
    ticks = list(range(math.ceil(low), math.floor(high) + 1))
    return ticks if len(ticks) >= 3 else list(np.linspace(low, high, 5))


def plot_loss_curves(curves, path, title="losses", size=(720, 420)):
    """Draw {name: [(epoch, value), ...]} as lines on a log10 axis into a PNG, with a legend; no matplotlib."""
    W, H = size
    left, right, top, bottom = 70, 170, 30, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((left, 8), title, fill="black", font=font)
    points = [(e, math.log10(v)) for c in curves.values() for e, v in c if v > 0 and math.isfinite(v)]
    if points:
        epochs, logs = [p[0] for p in points], [p[1] for p in points]
        e0, e1 = min(epochs), max(max(epochs), min(epochs) + 1)
        y0, y1 = min(logs), max(logs)
        y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 - y0 < 1e-6 else (y0, y1)

        def xy(epoch, log_value):
            return (left + (epoch - e0) / (e1 - e0) * (W - left - right),
                    H - bottom - (log_value - y0) / (y1 - y0) * (H - top - bottom))
        draw.rectangle([left, top, W - right, H - bottom], outline="black")
        for tick in _nice_ticks(y0, y1):
            x, y = xy(e0, tick)
            draw.line([(left - 4, y), (left, y)], fill="black")
            draw.text((4, y - 6), f"{10 ** tick:.3g}", fill="black", font=font)
        for epoch in sorted({e0, e1}):
            x, _ = xy(epoch, y0)
            draw.text((x - 10, H - bottom + 6), str(epoch), fill="black", font=font)
        draw.text(((W - right + left) / 2 - 15, H - bottom + 20), "epoch", fill="black", font=font)
        colours = (np.asarray(colormap("gist_rainbow", np.arange(len(curves)) / max(len(curves), 1))) * 200)
        for i, (name, curve) in enumerate(curves.items()):
            colour = tuple(int(c) for c in colours[i])
            line = [xy(e, math.log10(v)) for e, v in curve if v > 0 and math.isfinite(v)]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            draw.line([(W - right + 10, top + 10 + 16 * i), (W - right + 30, top + 10 + 16 * i)], fill=colour,
                      width=3)
            draw.text((W - right + 35, top + 4 + 16 * i), name, fill="black", font=font)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    image.save(tmp)
    tmp.replace(path)  # an open viewer never sees half a file

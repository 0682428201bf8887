"""What a training run tells the user while it runs: a progress bar per epoch (stderr) and one
line per epoch (stdout)."""
from __future__ import annotations

import sys
import threading
import time


class EpochBar:
    """A tqdm bar over an epoch's batches showing loss, accuracy, samples/s and time left; does
    nothing when ``enabled`` is false or stderr is not a terminal."""

    def __init__(self, epoch: int, epochs: int, batches: int, start: int = 0, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=batches, initial=start, desc=f"epoch {epoch}/{epochs}", unit="batch",
                            file=sys.stderr, leave=False, dynamic_ncols=True, disable=None,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}{postfix}]")

    def update(self, loss: float, accuracy: float | None, samples_per_s: float) -> None:
        if self.bar is not None:
            postfix = f"loss={loss:.4f}"
            if accuracy is not None:
                postfix += f", acc={100 * accuracy:.1f}%"
            self.bar.set_postfix_str(f"{postfix}, {samples_per_s:,.0f} samples/s", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def epoch_line(row: dict, epochs: int, lr: bool = False) -> str:
    """``epoch  3/5  train loss 0.2154 acc 93.1%  val loss 0.1822 acc 94.5%  (6.1 s, 2,410 samples/s)``,
    with ``top5 99.0%`` after each accuracy when the row has top-k accuracies and ``lr 0.05``
    before the timing when ``lr``. Other tasks show their measures: ``psnr 21.3 dB`` (and a VAE's
    ``recon``/``kl`` parts), ``acc`` (of pixels) and ``miou``; a GAN its two losses and D(x), D(G(z))."""
    width = len(str(epochs))
    top = next((key[len("train_"):] for key in row if key.startswith("train_top")), None)
    text = f"epoch {row['epoch']:>{width}}/{epochs}"
    if "d_loss" in row:
        text += (f"  d_loss {row['d_loss']:.4f} g_loss {row['g_loss']:.4f}  D(x) {row['d_real']:.3f} "
                 f"D(G(z)) {row['d_fake']:.3f}")
    else:
        for split in ("train", "val"):
            if row.get(f"{split}_loss") is None:
                continue
            text += f"{'  ' if split == 'train' else '  '}{split} loss {row[f'{split}_loss']:.4f}"
            if f"{split}_recon" in row and row[f"{split}_recon"] is not None:
                text += f" (recon {row[f'{split}_recon']:.4f} + kl {row[f'{split}_kl']:.4f})"
            if f"{split}_psnr" in row and row[f"{split}_psnr"] is not None:
                text += f" psnr {row[f'{split}_psnr']:.2f} dB"
            if f"{split}_acc" in row:
                text += f" acc {_pct(row[f'{split}_acc'])}"
            if f"{split}_miou" in row and row[f"{split}_miou"] is not None:
                text += f" miou {_pct(row[f'{split}_miou'])}"
            if top:
                text += f" {top} {_pct(row[f'{split}_' + top])}"
    if lr:
        text += f"  lr {row['lr']:.3g}"
    return text + f"  ({row['seconds']:.1f} s, {row['samples_per_s']:,.0f} samples/s)"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


class CompileNotice:
    """Says what a silent first run is doing: when the block it wraps (a model's ``warm_up``) has
    been running for ``after`` seconds and numba is compiling (not only loading its cache), writes
    "compiling kernels for this machine: first run only ..." to ``stream`` and, at the end, how
    long the block took. ``seconds`` is that time, ``shown`` whether the notice was written.

        with CompileNotice() as notice:
            model.warm_up(optimizer, loss)

    ``compiling`` (a callable, default: numba's compile events) says whether compiling happened.
    """

    MESSAGE = "compiling kernels for this machine: first run only (numba caches them) ..."

    def __init__(self, stream=None, after: float = 1.0, compiling=None):
        self.stream = stream if stream is not None else sys.stderr
        self.after = after
        self.seconds = 0.0
        self.shown = False
        self.compiles = 0
        self._listens = compiling is None          # count numba's compile events
        self._compiling = compiling or (lambda: self.compiles > 0)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._listener = None

    def __enter__(self):
        self._start = time.perf_counter()
        if self._listens and self._listener is None:
            self._listen()
        self._thread = threading.Thread(target=self._announce, name="cnnspec-compile-notice", daemon=True)
        self._thread.start()
        return self

    def _listen(self):
        try:
            from numba.core import event
        except ImportError:                        # no numba: nothing compiles
            return
        notice = self

        class Listener(event.Listener):
            def on_start(self, ev):
                notice.compiles += 1

            def on_end(self, ev):
                pass

        self._listener = Listener()
        event.register("numba:compile", self._listener)

    def _announce(self):
        deadline = self._start + self.after
        while not self._done.wait(max(0.0, min(0.1, deadline - time.perf_counter()))):
            if time.perf_counter() < deadline or not self._compiling():
                continue
            with self._lock:
                if not self._done.is_set():
                    self.stream.write(self.MESSAGE)
                    self.stream.flush()
                    self.shown = True
            return

    def __exit__(self, *exc):
        with self._lock:
            self._done.set()
            self.seconds = time.perf_counter() - self._start
            if self.shown:
                self.stream.write(f" {self.seconds:.1f} s\n" if exc[0] is None else " stopped\n")
                self.stream.flush()
        self._thread.join()
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._listener)
            self._listener = None
        return False

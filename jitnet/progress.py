"""A small progress bar for long runs, and a logging handler that prints log
lines above it. On a terminal the bar redraws in place; elsewhere (CI logs, a
pipe) it prints a line at every tenth of the run."""
import logging
import sys
import time


class ProgressBar:
    def __init__(self, total, start=0, stream=None, width=30, label=""):
        self.total, self.start, self.width, self.label = max(int(total), 1), int(start), width, label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.shown = False
        self.next_line = 0

    def line(self, done, info):
        frac = min(max(done / self.total, 0.0), 1.0)
        filled = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_text = time.strftime("%M:%S", time.gmtime(eta)) if eta == eta else "--:--"
        return (f"{self.label}[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"{info}  {rate:.1f} it/s  ETA {eta_text}")

    def update(self, done, info=""):
        if self.tty:
            self.stream.write("\r\033[K" + self.line(done, info))
            self.stream.flush()
            self.shown = True
        elif done >= self.next_line or done >= self.total:
            self.stream.write(self.line(done, info) + "\n")
            self.stream.flush()
            self.next_line = done + max(self.total // 10, 1)

    def clear(self):
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self):
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


class BarAwareHandler(logging.StreamHandler):
    """Clears the progress bar line before a log record, so the two don't mix."""

    def __init__(self, stream=None):
        super().__init__(stream or sys.stderr)
        self.bar = None

    def emit(self, record):
        if self.bar is not None:
            self.bar.clear()
        super().emit(record)

"""The divergence monitor: stop training when its loss climbs far above its best.

The training loss is a continuous-density ELBO in bits/dim: its reconstruction term is a
Gaussian density of width ``model.reconstruction_sigma`` (1e-3), which can exceed 1, so
the loss has no floor at zero and a well-trained model's is negative (about -5.5 bits/dim
in the cpu preset). A ratio to the lowest loss means nothing once the loss can cross zero;
the monitor therefore works on differences, which do not depend on the loss's sign or
offset:

    stop when  mean > best + max(min_rise, mad_factor * noise * sqrt(log_every / n))

- ``mean``: the mean training loss over the last ``n`` steps (a log interval, ``n`` =
  ``log_every``, or the part of one before a checkpoint);
- ``best``: the lowest mean of a complete log interval so far;
- ``noise``: a robust standard deviation of one interval mean, from the median absolute
  deviation (MAD) of the differences between consecutive interval means over the last
  ``window`` intervals. Differences cancel the loss's trend, so neither a healthy descent
  nor a slow climb inflates it; the median ignores a few outliers. A mean over fewer
  steps is noisier by sqrt(log_every / n);
- ``min_rise`` (bits/dim): the floor that keeps the tiny wiggles of a very flat plateau
  (noise near 0) from stopping a healthy run.

The monitor arms once it has ``ARMING_INTERVALS`` complete intervals (fewer differences
give no usable MAD) and says so once in the log. A checkpoint stores its reference
(``state_dict``) and a resume restores it, so a resumed run is judged at once. It only
reads numbers: the training loop (``train.train_run``) feeds it and acts on its verdict;
NaN/inf are the loop's own check.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from typing import Any, Mapping

log = logging.getLogger(__name__)

__all__ = ["ARMING_INTERVALS", "DivergenceMonitor"]

# Complete log intervals before the monitor judges: 4 differences for the MAD.
ARMING_INTERVALS = 5
# MAD -> standard deviation of a normal distribution; / sqrt(2): of one mean, not a difference.
_MAD_TO_SD = 1.4826 / math.sqrt(2.0)


class DivergenceMonitor:
    """Judges the training loss's interval means; see the module docstring.

    ``observe`` returns None while the loss is healthy, else a sentence that says why not.
    """

    def __init__(self, log_every: int, mad_factor: float, min_rise: float, window: int):
        if log_every < 1 or window < ARMING_INTERVALS - 1:
            raise ValueError(
                f"log_every must be >= 1 and window >= {ARMING_INTERVALS - 1} "
                f"(got {log_every}, {window})"
            )
        self.log_every = int(log_every)
        self.mad_factor = float(mad_factor)
        self.min_rise = float(min_rise)
        self.best = math.inf
        self.intervals = 0  # complete intervals seen
        # window differences need window + 1 means
        self._means: deque[float] = deque(maxlen=int(window) + 1)

    @classmethod
    def from_config(cls, training_cfg: Mapping[str, Any]) -> DivergenceMonitor | None:
        """The monitor that ``training.divergence`` asks for; None when it is null (off)."""
        settings = training_cfg.get("divergence")
        if settings is None:
            return None
        return cls(
            int(training_cfg["log_every"]),
            float(settings["mad_factor"]),
            float(settings["min_rise"]),
            int(settings["window"]),
        )

    def state_dict(self) -> dict[str, Any]:
        """The reference (plain numbers, as a checkpoint stores it): a resumed run's
        monitor goes on judging from it, armed if it was, instead of arming again."""
        return {
            "log_every": self.log_every,
            "best": self.best,
            "intervals": self.intervals,
            "means": list(self._means),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """Take up the reference ``state`` (``state_dict``); False, leaving the monitor
        fresh, where it was taken over intervals of another log_every (a cosmetic key a
        resume may change), whose means are not this one's."""
        if int(state["log_every"]) != self.log_every:
            return False
        self.best = float(state["best"])
        self.intervals = int(state["intervals"])
        self._means = deque((float(m) for m in state["means"]), maxlen=self._means.maxlen)
        return True

    @property
    def armed(self) -> bool:
        return self.intervals >= ARMING_INTERVALS

    def noise(self) -> float:
        """Robust standard deviation of one interval mean (bits/dim), from the window."""
        means = list(self._means)
        differences = [b - a for a, b in zip(means, means[1:])]
        if len(differences) < 2:
            return 0.0
        centre = statistics.median(differences)
        return _MAD_TO_SD * statistics.median(abs(d - centre) for d in differences)

    def allowed_rise(self, steps: int) -> float:
        """How far above ``best`` a mean over ``steps`` steps may lie (bits/dim)."""
        spread = self.noise() * math.sqrt(self.log_every / max(1, steps))
        return max(self.min_rise, self.mad_factor * spread)

    def observe(self, mean: float, steps: int, complete: bool) -> str | None:
        """Judge ``mean``, the mean loss of the last ``steps`` steps, then, if ``complete``
        (a whole log interval), add it to the reference. Returns the reason to stop, or None.
        """
        if self.armed:
            allowed = self.allowed_rise(steps)
            if mean > self.best + allowed:
                partial = "" if steps >= self.log_every else " x sqrt(log_every / steps)"
                return (
                    f"the mean loss over the last {steps} step{'s' * (steps != 1)} rose to "
                    f"{mean:.4g} bits/dim, "
                    f"{mean - self.best:.4g} above its best log-interval mean {self.best:.4g}, "
                    f"more than the {allowed:.3g} that training.divergence allows (the larger "
                    f"of min_rise {self.min_rise:g} and mad_factor {self.mad_factor:g} x noise "
                    f"{self.noise():.3g}{partial})"
                )
        if complete and steps >= self.log_every:
            self._means.append(mean)
            self.best = min(self.best, mean)
            self.intervals += 1
            if self.intervals == ARMING_INTERVALS:
                log.info(
                    "divergence monitor armed: reference %.4f bits/dim (best log-interval mean), "
                    "noise %.3g; a mean above %.4f bits/dim stops training (the limit follows the "
                    "loss down)",
                    self.best,
                    self.noise(),
                    self.best + self.allowed_rise(self.log_every),
                )
        return None

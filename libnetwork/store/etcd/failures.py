"""How a recurring etcd call's failures are logged: an outage is a few lines, whatever its length."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class _FailureRun:
    """Failures in a row of one recurring etcd call (a watch, a host's keep-alive), logged so that an
    outage is a few lines, not one per retry: the 1st, 10th, 100th ... failure at WARNING (enough to
    see an outage and its length), the others at DEBUG, and the first success after them once."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self._since = 0.0

    def failed(self, err: BaseException, retry: str) -> None:
        if not self.count:
            self._since = time.monotonic()
        self.count += 1
        level = logging.WARNING if _is_power_of_ten(self.count) else logging.DEBUG
        log.log(level, "%s: %s; %s (failure %d in a row)", self.what, err, retry, self.count)

    def succeeded(self) -> None:
        if self.count:
            log.warning("%s works again after %d failure(s) over %.0f s", self.what, self.count,
                        time.monotonic() - self._since)
            self.count = 0


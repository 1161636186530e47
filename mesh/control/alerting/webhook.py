"""Alert notifications in Alertmanager's webhook JSON (version 4), so a receiver written
for Alertmanager takes the local mesh's as they are: one notification per alert that
fires or resolves, sent from a thread of its own, so that a slow or absent receiver
never holds up the supervisor. A notification the receiver refuses or does not take in
time is tried again a few times, then dropped and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

FIRING, RESOLVED = "firing", "resolved"
#: Alertmanager's `endsAt` of an alert still firing.
_NOT_ENDED = "0001-01-01T00:00:00Z"
#: Tries of one notification, and the seconds before each try after the first.
TRIES, BACKOFF_SECONDS = 4, (1.0, 2.0, 4.0)
TIMEOUT_SECONDS = 5.0
#: Notifications waiting to be sent beyond which new ones are dropped (and logged).
MAX_WAITING = 1000
RECEIVER = "meshctl"


@dataclass(frozen=True)
class Notice:
    """An alert that fired or resolved."""

    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None


def _timestamp(moment: datetime | None) -> str:
    if moment is None:
        return _NOT_ENDED
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable identifier of an alert's label set (16 hex digits, as Alertmanager's)."""
    text = "\0".join(f"{k}\0{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def payload(notice: Notice, external_url: str) -> dict[str, Any]:
    """Alertmanager's webhook body for one alert, grouped by its whole label set."""
    labels = dict(notice.labels)
    annotations = dict(notice.annotations)
    group = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": RECEIVER,
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": notice.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _timestamp(notice.starts_at),
                "endsAt": _timestamp(notice.ends_at),
                "generatorURL": external_url,
                "fingerprint": fingerprint(labels),
            }
        ],
    }


class WebhookSender:
    """Posts notices to `url` in order, from a daemon thread."""

    def __init__(self, url: str, external_url: str) -> None:
        self.url = url
        self.external_url = external_url
        self._waiting: queue.Queue[Notice | None] = queue.Queue(MAX_WAITING)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._send_all, name="alert-webhook", daemon=True)
        self._thread.start()

    def send(self, notice: Notice) -> None:
        try:
            self._waiting.put_nowait(notice)
        except queue.Full:
            log.error("dropped the %s notice of %s: too many waiting", notice.status, notice.labels)

    def stop(self) -> None:
        self._stopped.set()
        self._waiting.put(None)
        self._thread.join(TIMEOUT_SECONDS)

    def _send_all(self) -> None:
        while (notice := self._waiting.get()) is not None:
            self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        body = json.dumps(payload(notice, self.external_url)).encode()
        for attempt in range(TRIES):
            if attempt and self._stopped.wait(BACKOFF_SECONDS[attempt - 1]):
                return
            if self._post(body):
                return
        log.error("gave up the %s notice of %s to %s", notice.status, notice.labels, self.url)

    def _post(self, body: bytes) -> bool:
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError) as error:
            log.warning("the alert webhook %s did not take a notice: %s", self.url, error)
            return False

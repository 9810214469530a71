"""Webhooks, delivered the way livekit-server delivers them.

Each event is POSTed to every configured URL as protojson (``MessageToJson``: camelCase
field names, enums by name, 64-bit integers as strings) with
``Content-Type: application/webhook+json`` and an ``Authorization`` header holding a bare
HS256 JWT (no ``Bearer``) signed with the webhook API key, whose ``sha256`` claim is the
standard base64 SHA-256 of the exact body bytes. ``livekit.api.WebhookReceiver`` and the
other server SDKs verify exactly this.

Room code calls :meth:`WebhookSink.send_nowait`, which never blocks and never raises:
a room must not stall because an endpoint is slow. Each URL has its own bounded queue
and worker, so one dead endpoint neither delays nor drops another's events, and events
reach each URL in the order they were queued. When a queue is full the event is
dropped with a warning and counted; the next event delivered to that URL carries the
count in ``num_dropped``, as the reference server does.

Delivery retries connection errors, timeouts, 429 and 5xx with exponential backoff, up to
``max_attempts`` in all; other statuses are final (resending the same body cannot fix a
4xx). Failures are logged and counted, never raised out of :meth:`WebhookSender.run`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import secrets
import string
import time
from collections.abc import Callable, Sequence

import attrs
import httpx
import trio
from google.protobuf.json_format import MessageToJson
from livekit.protocol.webhook import WebhookEvent

from pysfu.auth import mint_token

__all__ = [
    "CONTENT_TYPE",
    "WebhookSender",
    "WebhookStatistics",
    "encode_event",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/webhook+json"
TOKEN_TTL_S = 5 * 60.0
"""Lifetime of each request's JWT: the reference server's five minutes, long enough for
retries and clock skew, short enough that a captured request cannot be replayed for long."""
DEFAULT_TIMEOUT_S = 10.0
"""Per-attempt HTTP timeout; a hung endpoint must not hold its queue forever."""
MAX_BACKOFF_S = 30.0
"""Cap on the wait between attempts (go-retryablehttp's default maximum)."""
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LEN = 12
"""Random characters after ``EV_``, the length of livekit's GUIDs."""


@attrs.frozen
class WebhookStatistics:
    """Counters summed over all URLs (one event to two URLs counts twice)."""

    queued: int
    """Deliveries accepted into a queue."""
    delivered: int
    """Deliveries answered with a 2xx."""
    failed: int
    """Deliveries abandoned after their last attempt."""
    dropped: int
    """Deliveries refused because a queue was full or the sender was closed."""
    attempts: int
    """HTTP requests made, including retries."""


def encode_event(event: WebhookEvent) -> bytes:
    """The request body for ``event``: compact protojson, UTF-8."""
    return MessageToJson(event, indent=None).encode("utf-8")


def new_event_id() -> str:
    """A fresh random ``EV_`` event id."""
    return "EV_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LEN))


class _Target:
    """One URL's queue and its delivery counters."""

    def __init__(self, url: str, queue_size: int) -> None:
        self.url = url
        self.send, self.receive = trio.open_memory_channel[WebhookEvent](queue_size)
        # Events this URL never got (queue overflow or failed delivery) since its last
        # delivery attempt; reported to the receiver in the next event's num_dropped.
        self.unreported_drops = 0


class WebhookSender:
    """Delivers webhook events to HTTP endpoints; see the module docstring.

    ``send_nowait`` may be called before :meth:`run` starts: events wait in the queues
    (up to ``queue_size`` per URL). :meth:`run` delivers until cancelled, or until
    :meth:`close` has been called and the queues are drained.
    """

    def __init__(
        self,
        *,
        urls: Sequence[str],
        api_key: str,
        api_secret: str,
        queue_size: int = 1000,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        backoff_s: float = 1.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._targets = [_Target(url, queue_size) for url in urls]
        self._api_key = api_key
        self._api_secret = api_secret
        self._max_attempts = max_attempts
        self._clock = clock
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._queued = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._attempts = 0

    def statistics(self) -> WebhookStatistics:
        """A snapshot of the delivery counters."""
        return WebhookStatistics(
            queued=self._queued,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            attempts=self._attempts,
        )

    def send_nowait(self, event: WebhookEvent) -> None:
        """Queue a copy of ``event`` for every URL, filling ``id`` and ``created_at``.

        Never blocks and never raises: a full queue or a closed sender drops the event
        for that URL with a warning.
        """
        queued = WebhookEvent()
        queued.CopyFrom(event)
        if not queued.id:
            queued.id = new_event_id()
        if not queued.created_at:
            queued.created_at = int(self._clock())
        for target in self._targets:
            try:
                target.send.send_nowait(queued)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                target.unreported_drops += 1
                self._dropped += 1
                log.warning(
                    "webhook queue full or closed, dropping %s event %s for %s",
                    queued.event,
                    queued.id,
                    target.url,
                )
            else:
                self._queued += 1

    def close(self) -> None:
        """Accept no more events; :meth:`run` returns once the queued ones are handled."""
        for target in self._targets:
            target.send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued events until cancelled or closed and drained.

        Signals readiness through ``task_status.started()``. Owns one HTTP client for
        its lifetime; cancellation abandons in-flight requests and queued events.
        """
        async with (
            httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as client,
            trio.open_nursery() as nursery,
        ):
            for target in self._targets:
                nursery.start_soon(self._worker, client, target)
            task_status.started()

    async def _worker(self, client: httpx.AsyncClient, target: _Target) -> None:
        async for event in target.receive:
            await self._deliver(client, target, event)

    async def _deliver(
        self, client: httpx.AsyncClient, target: _Target, event: WebhookEvent
    ) -> None:
        if target.unreported_drops:
            # The queued event is shared between URLs; the drop count is this URL's own.
            counted = WebhookEvent()
            counted.CopyFrom(event)
            counted.num_dropped = event.num_dropped + target.unreported_drops
            target.unreported_drops = 0
            event = counted
        body = encode_event(event)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        for attempt in range(1, self._max_attempts + 1):
            # A fresh token per attempt: a retry after a long backoff must not carry one
            # close to expiry.
            token = mint_token(
                self._api_key,
                self._api_secret,
                identity="",
                sha256=digest,
                ttl_s=TOKEN_TTL_S,
                now=self._clock(),
            )
            headers = {
                "Content-Type": CONTENT_TYPE,
                "Authorization": token,
                "User-Agent": "pysfu-webhook",
            }
            self._attempts += 1
            retryable: bool
            try:
                response = await client.post(target.url, content=body, headers=headers)
            except (httpx.HTTPError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                retryable = True
            except Exception as exc:
                # Not a network failure (an unusable URL, say): retrying cannot help, and
                # the contract is that delivery problems never escape run().
                log.exception("webhook to %s could not be attempted", target.url)
                problem = f"{type(exc).__name__}: {exc}"
                retryable = False
            else:
                if 200 <= response.status_code < 300:
                    self._delivered += 1
                    log.debug("sent webhook %s %s to %s", event.event, event.id, target.url)
                    return
                problem = f"HTTP {response.status_code}"
                retryable = response.status_code == 429 or (
                    response.status_code >= 500 and response.status_code != 501
                )
            if not retryable or attempt == self._max_attempts:
                break
            delay = min(self._backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            log.info(
                "webhook %s %s to %s failed (%s), attempt %d of %d, retrying in %.1fs",
                event.event,
                event.id,
                target.url,
                problem,
                attempt,
                self._max_attempts,
                delay,
            )
            if math.isfinite(delay) and delay > 0:
                await trio.sleep(delay)
        self._failed += 1
        target.unreported_drops += 1 + event.num_dropped
        log.warning(
            "failed to send webhook %s %s to %s after %d attempt(s): %s",
            event.event,
            event.id,
            target.url,
            attempt,
            problem,
        )

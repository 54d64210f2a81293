"""JetStream plumbing the cluster workers share (nats-py, asyncio).

- :func:`connect`: a connection that reconnects for ever (a node or the whole cluster may
  restart under a running appliance).
- :func:`ensure_stream`: create a stream unless it exists.
- :class:`SubjectChain`: append to one subject so that the stream holds the messages in
  order with no hole and no duplicate, whatever fails in between. Each publish names the
  subject's last stream sequence it expects (``Nats-Expected-Last-Subject-Sequence``): a
  message after a lost one is refused instead of stored, and a retry of a message that
  did get stored is refused too; the chain then looks at the subject's last message and
  carries on if it is the one it was sending (its ``Nats-Msg-Id``). The msg id also lets
  JetStream's own deduplication drop a republished duplicate.
- :class:`StreamReader`: read a subject in stream order from a chosen stream sequence,
  through a pull consumer re-created at the next undelivered message whenever it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from appliance.cluster.wire import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID, StreamSpec

log = logging.getLogger(__name__)

API_TIMEOUT_S = 2.0
RETRY_S = 0.2
WRONG_LAST_SEQUENCE = 10071  # JetStream error code of a failed expected-sequence check
STREAM_NAME_IN_USE = 10058
# A retry whose earlier try (same msg id) the stream still works on, as while a killed
# node's stream elects a leader: the id makes the retry safe, so wait and send it again.
DUPLICATE_IN_PROCESS = 10158
# What a publish or an API call raises while a server or the cluster is unavailable.
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)
# A consumer the server lost, or JetStream not answering yet (a node restarting).
GONE = (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError)


class ChainBroken(RuntimeError):
    """Someone else appended to a subject this process believed it alone wrote."""


async def connect(servers: list[str], credentials: Path | None, name: str) -> nats.NATS:
    """Connect (retrying until a server answers) and reconnect for ever after that."""

    # A server going away is expected (restarts, failover): worth a warning, not an error.
    async def error_cb(exc: Exception) -> None:
        log.warning("NATS connection: %s: %s", type(exc).__name__, exc)

    async def disconnected_cb() -> None:
        log.warning("NATS disconnected; reconnecting")

    async def reconnected_cb() -> None:
        log.info("NATS reconnected")

    options = {
        "servers": servers,
        "name": name,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.25,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }
    if credentials is not None:
        options["user_credentials"] = str(credentials)
    while True:
        try:
            return await nats.connect(**options)
        except (OSError, nats.errors.NoServersError, *TRANSIENT) as exc:
            log.warning("no NATS server answers at %s (%s); retrying", servers, exc)
            await asyncio.sleep(1.0)


def stream_config(spec: StreamSpec) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        storage=api.StorageType.FILE,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        num_replicas=spec.replicas,
        duplicate_window=min(spec.duplicate_window_s, spec.max_age_s),  # a server rule
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create ``spec``'s stream unless a stream of that name exists (then it is kept as
    it is: streams outlive the appliances that use them)."""
    while True:
        try:
            await js.stream_info(spec.name)
            return
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(stream_config(spec))
                log.info("created stream %s for %s", spec.name, list(spec.subjects))
                return
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:  # not a concurrent creation
                    raise
        except TRANSIENT as exc:
            log.warning("JetStream unavailable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(RETRY_S)


async def retrying(call: Callable, keep_going: Callable[[], bool], what: str):
    """Await ``call()`` until it succeeds, retrying while JetStream is unavailable."""
    warned = False
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            if not keep_going():
                raise
            if not warned:
                log.warning("%s: JetStream unavailable (%s); retrying", what, type(exc).__name__)
                warned = True
            await asyncio.sleep(RETRY_S)


class SubjectChain:
    """Appends to one subject of a stream; see the module docstring."""

    def __init__(
        self, js: JetStreamContext, stream: str, subject: str, keep_going: Callable[[], bool]
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.keep_going = keep_going
        self.last_seq = 0  # stream sequence of the subject's last message (0: none)

    async def sync(self) -> api.RawStreamMsg | None:
        """Read the subject's last message (None: the subject is empty) and continue after it."""

        async def last() -> api.RawStreamMsg | None:
            try:
                return await self.js.get_last_msg(self.stream, self.subject)
            except nats.js.errors.NotFoundError:
                return None

        msg = await retrying(last, self.keep_going, f"last message of {self.subject}")
        self.last_seq = 0 if msg is None else msg.seq
        return msg

    async def append(self, payload: bytes, headers: dict[str, str]) -> int:
        """Store one message after the subject's last; its stream sequence."""
        while True:
            headers[EXPECTED_LAST_SUBJECT_SEQ] = str(self.last_seq)
            try:
                ack = await self.js.publish(
                    self.subject, payload, timeout=API_TIMEOUT_S, headers=headers
                )
            except nats.js.errors.APIError as exc:
                if exc.err_code == DUPLICATE_IN_PROCESS and self.keep_going():
                    await asyncio.sleep(RETRY_S)
                    continue
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                last = await self.sync()
                if last is None:
                    # The stream's limits removed every message of the subject (ours too,
                    # if an earlier try was stored): carry on from an empty subject.
                    log.warning("%s: the stream's limits emptied the subject", self.subject)
                    continue
                if (last.headers or {}).get(MSG_ID) == headers[MSG_ID]:
                    return self.last_seq  # an earlier try was stored: it is ours
                raise ChainBroken(
                    f"{self.subject}: another writer appended (last message "
                    f"{None if last is None else (last.headers or {}).get(MSG_ID)!r}); is the "
                    "same host or instance running twice?"
                ) from None
            except TRANSIENT as exc:
                if not self.keep_going():
                    raise
                log.debug("publish to %s: %s; retrying", self.subject, type(exc).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            self.last_seq = ack.seq
            return ack.seq


class StreamReader:
    """Messages of one subject (wildcards allowed) in stream order, from a sequence the
    caller chooses each time it opens the reader (None: from the subject's last message),
    through a pull consumer: messages come only when asked for, so a reader that stops
    reading leaves them in the stream, where its retention may drop them (a hole the reader
    sees in the records' own numbering) instead of piling them up in socket buffers.

    Ephemeral (``durable`` None): no acknowledgements, the server forgets the consumer when
    the reader is idle too long. Durable: named, explicit acknowledgements; opening it
    re-creates it at the chosen sequence (the caller's own records say where it stands;
    acks tell the server what is done). Either way it is re-created at the next message not
    yet delivered whenever the server loses it (a restart, an idle reader).
    """

    INACTIVE_S = 30.0  # an ephemeral consumer outlives a reader's pause this long

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject: str,
        durable: str | None = None,
        ack_wait_s: float = 60.0,
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.ack_wait_s = ack_wait_s
        self.next_seq: int | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    def _config(self) -> api.ConsumerConfig:
        if self.next_seq is None:
            start = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
        else:
            start = {
                "deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": self.next_seq,
            }
        if self.durable is None:
            return api.ConsumerConfig(
                filter_subject=self.subject, ack_policy=api.AckPolicy.NONE,
                inactive_threshold=self.INACTIVE_S, mem_storage=True, **start,
            )  # fmt: skip
        return api.ConsumerConfig(
            durable_name=self.durable, filter_subject=self.subject,
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s, max_ack_pending=-1,
            **start,
        )  # fmt: skip

    async def open(self, start_seq: int | None) -> None:
        self.next_seq = None if start_seq is None else max(1, start_seq)
        if self.durable is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(self.stream, self.durable)
            await self.js.add_consumer(self.stream, self._config())
            self._psub = await self.js.pull_subscribe_bind(self.durable, self.stream)
        else:
            self._psub = await self.js.pull_subscribe(
                self.subject, stream=self.stream, config=self._config()
            )

    async def fetch(self, max_msgs: int, timeout: float) -> list[Msg]:
        """Up to ``max_msgs`` messages (empty when none came within ``timeout``)."""
        if self._psub is None:  # a re-creation failed (the server was still down): again
            with contextlib.suppress(*TRANSIENT, *GONE):
                await self.open(self.next_seq)
            if self._psub is None:
                await asyncio.sleep(RETRY_S)
                return []
        try:
            msgs = await self._psub.fetch(max_msgs, timeout=timeout)
        except nats.errors.TimeoutError:
            return []
        except GONE:
            # The consumer is gone (or JetStream is restarting): again from where we are.
            log.info("consumer of %s lost; re-creating it at %s", self.subject, self.next_seq)
            await asyncio.sleep(RETRY_S)
            with contextlib.suppress(*TRANSIENT, *GONE):
                await self._reopen()
            return []
        except TRANSIENT as exc:
            log.debug("fetch %s: %s", self.subject, type(exc).__name__)
            await asyncio.sleep(RETRY_S)
            return []
        if msgs:
            self.next_seq = msgs[-1].metadata.sequence.stream + 1
        return msgs

    async def _reopen(self) -> None:
        await self.close()
        await self.open(self.next_seq)

    async def close(self) -> None:
        if self._psub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._psub.unsubscribe()
            self._psub = None


async def ack(msg: Msg) -> None:
    """Acknowledge, ignoring a connection that is down (the server then redelivers, and the
    reader's own records make the redelivery harmless)."""
    try:
        await msg.ack()
    except (*TRANSIENT, nats.errors.Error) as exc:
        log.debug("ack of %s: %s", msg.subject, type(exc).__name__)

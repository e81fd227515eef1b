"""The reconnect policy: run an agent's sessions, reconnecting with capped exponential back-off.

As umqtt.robust wraps umqtt.simple, `RobustAgent` wraps an agent and knows only its session
interface: `connect()` opens a session, `serve(max_rounds)` works until the rounds are done (or
`stopping` is set) and raises on a lost connection, `goodbye()` leaves cleanly, `drop()` forgets
a broken session, and `log(event, **fields)` writes a log line. A board agent must outlive any
session, so every exception of a session is a disconnection: logged, then retried after a wait
that starts at FIRST_BACKOFF_MS, doubles at each failure in a row and stays at MAX_BACKOFF_MS.
"""

from device_agent.clock import sleep_ms

FIRST_BACKOFF_MS = 500
"""The wait before the first reconnection, and again once a connection succeeded."""

MAX_BACKOFF_MS = 30000
"""The longest wait between two reconnections."""


def next_backoff(ms):
    """The wait after a failed attempt that waited `ms` before: doubled, capped."""
    return min(ms * 2, MAX_BACKOFF_MS)


class RobustAgent:
    """Runs `agent` until it is done, reconnecting after any loss; `sleep(ms)` waits."""

    def __init__(self, agent, sleep=sleep_ms):
        self.agent = agent
        self.sleep = sleep

    def run(self, max_rounds=None):
        """Connect, serve until max_rounds rounds are done (None: forever), say goodbye.

        Returns after the goodbye, or after a failed session once the agent is `stopping`.
        """
        agent = self.agent
        backoff = FIRST_BACKOFF_MS
        while True:
            try:
                agent.connect()
                backoff = FIRST_BACKOFF_MS
                agent.serve(max_rounds)
                agent.goodbye()
                return
            except Exception as exc:  # noqa: BLE001 - a board agent must outlive any session
                agent.log("disconnected", error=repr(exc), retry_ms=backoff)
                agent.drop()
                if agent.stopping:
                    return
                self.sleep(backoff)
                backoff = next_backoff(backoff)

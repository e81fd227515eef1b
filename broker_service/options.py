"""What an operator gives every command, checked one way for all of them: the error a setting
that cannot work raises, and the broker's URL.

The service's configuration (server.config) and the fleet's status view (observe.status) both
read a broker URL and both report a bad setting as a ConfigError; this module holds the two so
that neither layer imports the other. It imports nothing of the project.
"""

from __future__ import annotations

from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting that cannot work; the message names it and where it came from."""


def broker_address(broker: str) -> tuple[str, int, bool]:
    """(host, port, tls) from a broker URL, mqtt://host:port or mqtts://host:port (TLS); the
    port defaults to 1883, or 8883 with TLS. ConfigError for any other URL."""
    url = urlparse(broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ConfigError(
            "broker must look like mqtt://host:port or mqtts://host:port, got %r" % broker
        )
    tls = url.scheme == "mqtts"
    return url.hostname, url.port or (8883 if tls else 1883), tls

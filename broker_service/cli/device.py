"""`tinymetafed device bundle|enroll|revoke`: what a real board needs, its files and its broker
credentials.

bundle writes the files that go onto a board; enroll gives a device its broker password, its ACL
block, its board config and (with a keys file) its HMAC key; revoke takes them away again. They
form one command group because they are the steps of putting a board into a fleet (and out of
it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from broker_service.tools import bundle

from .common import SERVICE_DEFAULTS, Subcommands, add_command, read_json

HMAC_KEYS_HELP = (
    "the service's hmac_keys_file: give the device a new HMAC key there and in its config "
    "(revoke removes it); the service reads the file at start"
)


def add_device(sub: Subcommands) -> None:
    """The parser of `tinymetafed device` and its three commands."""
    device = sub.add_parser(
        "device", help="work with device boards", description="Board files and credentials."
    )
    inner = device.add_subparsers(dest="device_command", required=True)
    _add_bundle(inner)
    _add_enroll(inner)
    _add_revoke(inner)


def _add_bundle(sub: Subcommands) -> None:
    """The parser of `tinymetafed device bundle`."""
    p = add_command(sub, "bundle", cmd_device_bundle, "write the files that go onto a board")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="the board's config JSON (default: the ESP32 example)")
    p.add_argument("--mpy", action="store_true", help="cross-compile to .mpy with mpy-cross")
    p.add_argument(
        "--arch",
        help="the board (%s) or a MicroPython architecture: the target of --mpy and of the "
        "compiled kernels" % ", ".join(bundle.ARCHES),
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="strip @micropython.native (ports without the native emitter)",
    )
    p.add_argument(
        "--no-native",
        action="store_true",
        help="leave out the compiled kernels (tmf_kernels.mpy): the board runs the Python ones",
    )


def cmd_device_bundle(args: argparse.Namespace) -> int:
    """Write what goes onto a board (sources or .mpy, main.py, boot.py, config.json, and with
    --arch the compiled kernels)."""
    config = read_json(args.config, "--config") if args.config else None
    files = bundle.write_bundle(
        Path(args.out), config, args.mpy, args.arch, args.plain, native=not args.no_native
    )
    print("wrote %d files to %s" % (len(files), args.out))
    print("copy them onto the board, e.g.: mpremote connect PORT fs cp -r %s/* :" % args.out)
    return 0


def _add_enroll(sub: Subcommands) -> None:
    """The parser of `tinymetafed device enroll`."""
    p = add_command(
        sub, "enroll", cmd_device_enroll, "create a device's broker credentials and config"
    )
    p.add_argument("--device-id", required=True)
    p.add_argument("--passwd-file", default="deploy/mosquitto/passwd")
    p.add_argument("--password", help="default: a new random one (printed in the config only)")
    p.add_argument("--broker-host", default="192.0.2.10", help="as the board reaches it")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--no-tls", action="store_true", help="plain MQTT (a lab broker only)")
    p.add_argument("--ca-file", help="the broker's CA certificate (copied onto the board)")
    p.add_argument("--use-case", default=SERVICE_DEFAULTS.use_case)
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--out", help="write the board config JSON here (owner-only)")
    p.add_argument("--replace", action="store_true", help="reset an enrolled device")
    p.add_argument("--hmac-keys-file", help=HMAC_KEYS_HELP)


def cmd_device_enroll(args: argparse.Namespace) -> int:
    """Create broker credentials for a device and write its board config."""
    from broker_service.tools.enroll import enroll

    enroll(
        args.device_id,
        Path(args.passwd_file),
        args.broker_host,
        args.broker_port,
        args.use_case,
        args.fleet,
        args.password,
        out=Path(args.out) if args.out else None,
        replace=args.replace,
        tls=not args.no_tls,
        ca_file=args.ca_file,
        keys_file=_keys_file(args),
    )
    _print_enrolled(args)
    return 0


def _print_enrolled(args: argparse.Namespace) -> None:
    """What enroll did, and what the board still needs (its CA, its bundle)."""
    if not args.no_tls and not args.ca_file:
        print(
            "note: no --ca-file: a MicroPython board refuses TLS without the broker's CA "
            "(deploy/ca/ca.crt after deploy/make-certs.sh)"
        )
    if args.out:
        print(
            "wrote %s; bundle it with: tinymetafed device bundle --config %s --out DIR"
            % (args.out, args.out)
        )
    print("enrolled %s in %s" % (args.device_id, args.passwd_file))


def _add_revoke(sub: Subcommands) -> None:
    """The parser of `tinymetafed device revoke`."""
    p = add_command(
        sub, "revoke", cmd_device_revoke, "remove a device's broker credentials and ACL"
    )
    p.add_argument("--device-id", required=True)
    p.add_argument("--passwd-file", default="deploy/mosquitto/passwd")
    p.add_argument("--hmac-keys-file", help=HMAC_KEYS_HELP)


def cmd_device_revoke(args: argparse.Namespace) -> int:
    """Remove a device's broker credentials and ACL lines."""
    from broker_service.tools.enroll import revoke

    revoke(args.device_id, Path(args.passwd_file), keys_file=_keys_file(args))
    print(
        "revoked %s in %s; restart the broker to close its connection "
        "(docker compose restart mosquitto)" % (args.device_id, args.passwd_file)
    )
    return 0


def _keys_file(args: argparse.Namespace) -> Path | None:
    """--hmac-keys-file as a path, or None when it is not given."""
    return Path(args.hmac_keys_file) if args.hmac_keys_file else None

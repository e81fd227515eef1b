"""Downlink integrity without a broker: the service signs what a keyed device acts on, and the
device refuses forged, unsigned, replayed, non-finite, out-of-range and oversized messages.

The scenarios live in tests/mpy/downlink_check.py and run here under a real `micropython`
(256 KB heap, one process each, as one agent on a board) and CPython, with identical results.
"""

import json
import math
import os
import ssl
import subprocess
import sys
from types import SimpleNamespace

import pytest

from broker_service.core.hyperparams import USE_CASE_SETTINGS, settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.server.config import ServiceConfig
from broker_service.server.signing import (
    EPOCH_FILE,
    DownlinkSigner,
    downlink_signer,
    next_epoch,
    session_epoch,
)
from broker_service.testing.session import micropython_exe
from broker_service.tools.bundle import write_bundle
from device_agent import codec, limits, reasons, validate
from device_agent.auth import digest, verify
from device_agent.config import AgentConfigError, check_security, make_config
from device_agent.model import Plan
from device_agent.specs import spec_for
from device_agent.transport import ca_der, connect_packet, remaining_length
from device_agent.transport_paho import PahoTransport
from tests.mpy import downlink_check as dc
from tests.mqtt_helpers import ROOT

EXPECTED = {
    "honest": "honest rounds 1 version 1 rejected - errors -",
    "forged_commands": "forged_commands rounds 0 version 1 rejected command:bad_signature=3 "
    "command:unsigned=1 errors -",
    "forged_model": "forged_model rounds 0 version 1 rejected command:bad_digest=1 "
    "model:bad_digest=1 errors bad_digest",
    "rollback": "rollback rounds 2 version 2 rejected command:rollback=2 model:rollback=1 errors -",
    "new_session": "new_session rounds 2 version 0 rejected model:rollback=1 errors -",
    "bad_values": "bad_values rounds 1 version 1 rejected model:bad_values=1 errors -",
    "bad_fields": "bad_fields rounds 1 version 1 rejected command:bad_setting=%d errors -"
    % len(dc.BAD_FIELDS),
    "bad_fields_unkeyed": "bad_fields_unkeyed rounds 1 version 1 rejected "
    "command:bad_setting=%d errors -" % len(dc.BAD_FIELDS),
    "unkeyed": "unkeyed rounds 1 version 1 rejected command:bad_lengths=1 errors -",
    "signed_update": "signed_update round 1",
    "bounded": "bounded seen [(b'tinymetafed/test/model', 100)] skipped "
    "[(b'tinymetafed/test/model', 1048576), (None, 10)] ops [50, 48, 50] largest read %d acks 2"
    % limits.DRAIN_CHUNK,
    "malformed": "malformed_length OSError mqtt: remaining length over four bytes",
}


def _run(cmd, names):
    return subprocess.run(
        cmd + names,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.splitlines()


def test_every_scenario_decides_the_same_under_micropython_in_256k_and_cpython():
    assert list(EXPECTED) == dc.names()
    script = "tests/mpy/downlink_check.py"
    cpython = _run([sys.executable, script], [])
    assert cpython == list(EXPECTED.values())
    for name, line in EXPECTED.items():  # one agent a heap, as on a board
        assert _run([micropython_exe(), "-X", "heapsize=256K", script], [name]) == [line]


# -- the scenarios in detail (CPython) --


def test_the_honest_round_is_signed_both_ways():
    p = dc.honest()
    (update,) = p.updates()
    header, _, _ = codec.decode(verify(dc.KEY, update))
    assert (header.round, header.model_version) == (1, 1)
    assert p.agent.newest == (dc.EPOCH, 1, 1) and p.agent.rejected == {}


def test_a_forged_model_is_never_trained_on():
    p = dc.forged_model()
    assert p.updates() == [] and p.errors() == [reasons.BAD_DIGEST]
    # the verified command made the agent fetch the retained model, and leave the topic after
    assert "fetch" in p.events
    model = dc.TOPICS.model
    assert p.broker.transports[0].history[1:] == [("sub", model), ("unsub", model)]


def test_a_newer_session_is_followed_after_fetching_its_model_again():
    p = dc.new_session()
    assert p.events.count("fetch") == 1 and p.agent.newest == (dc.EPOCH + 1, 0, 0)
    header, _, _ = codec.decode(verify(dc.KEY, p.updates()[-1]))
    assert (header.round, header.model_version) == (0, 0)


def test_rollbacks_keep_the_newest_model():
    p = dc.rollback()
    assert p.agent.model_version() == 2 and len(p.updates()) == 2
    assert p.agent.newest == (dc.EPOCH, 2, 2)


def test_a_cancel_must_be_signed_but_names_no_model():
    p = dc.Probe()
    model = dc.model_payload(p.n, 1)
    p.model(model)
    cancel = {"cancel": True, "recon_samples": 0}
    p.command(dc.command_payload(1, 1, None, fields=cancel))
    p.command(dc.command_payload(1, 1, None, key=None, fields=cancel))
    p.command(dc.command_payload(1, 1, None, epoch=None, fields=cancel))
    assert p.agent.rejected == {"command:unsigned": 1, "command:bad_command": 1}
    assert p.agent.newest == (dc.EPOCH, 1, 1)


def test_nan_from_a_cpython_json_parser_is_refused():
    """CPython's json reads NaN and Infinity; the range checks refuse them (a MicroPython parser
    refuses the text itself)."""
    for field in ("top_p", "recon_lr", "adapt_lr", "head_ridge"):
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(validate.Refused) as info:
                validate.check_settings({"round": 0, "version": 0, field: value})
            assert info.value.reason == reasons.BAD_SETTING and field in info.value.detail
    p = dc.Probe()
    p.model(dc.model_payload(p.n, 1))
    p.command(dc.command_payload(1, 1, None, key=None, fields={"top_p": math.nan}))
    assert p.agent.rejected == {"command:unsigned": 1}
    p.command(dc.command_payload(1, 1, dc.model_payload(p.n, 1), fields={"top_p": math.nan}))
    assert p.agent.rejected["command:bad_setting"] == 1 and p.agent.rounds_done == 0


@pytest.mark.parametrize("use_case", sorted(USE_CASE_SETTINGS))
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("quick", [False, True])
def test_every_command_the_service_sends_passes_the_range_checks(use_case, algorithm, quick):
    strategy = ALGORITHMS[algorithm](settings_for(use_case, quick=quick))
    for t in (0, 1, 199, limits.MAX_U32):
        validate.check_settings(strategy.round_command(t, version=t))


def test_signed_fields_are_required_and_well_formed():
    cmd = {"round": 0, "version": 0, "epoch": 1, "model_sha256": "ab" * 32}
    assert validate.check_signed_fields(cmd) == bytes.fromhex("ab" * 32)
    for broken, reason in [
        ({"epoch": None}, reasons.BAD_COMMAND),
        ({"model_sha256": "ab"}, reasons.BAD_COMMAND),
        ({"model_sha256": 7}, reasons.BAD_COMMAND),
        ({"model_sha256": "zz" * 32}, reasons.BAD_SETTING),
    ]:
        doc = {k: v for k, v in dict(cmd, **broken).items() if v is not None}
        with pytest.raises(validate.Refused) as info:
            validate.check_signed_fields(doc)
        assert info.value.reason == reason


def test_signature_check_tells_unsigned_from_forged():
    payload = bytes(codec.encode_command({"round": 1, "version": 1}, 1, 1))
    assert validate.check_signature(payload, None) == payload
    signed = dc.sign(dc.KEY, payload)
    assert validate.check_signature(signed, dc.KEY) == payload
    for message, reason in [
        (payload, reasons.UNSIGNED),
        (dc.sign(dc.OTHER_KEY, payload), reasons.BAD_SIGNATURE),
        (signed[:-1], reasons.BAD_SIGNATURE),
        (signed[:20], reasons.BAD_SIGNATURE),
        (b"", reasons.BAD_SIGNATURE),
    ]:
        with pytest.raises(validate.Refused) as info:
            validate.check_signature(message, dc.KEY)
        assert info.value.reason == reason


def test_model_limit_is_the_largest_legal_model():
    plan = Plan(spec_for("omniglot"))
    dense = codec.HEADER_SIZE + 4 * plan.n_params
    assert validate.model_limit(plan, 1 << 20) == dense
    assert validate.model_limit(plan, 1000) == 1000
    agent = dc.Probe().agent
    sizes = agent.size_limits()
    assert sizes[dc.TOPICS.command(dc.DEVICE)] == limits.MAX_COMMAND + 32
    assert sizes[dc.TOPICS.model] == codec.HEADER_SIZE + 4 * agent.plan.n_params


# -- the service's side --


def test_unkeyed_devices_get_the_commands_of_before():
    command = {"round": 3, "version": 3, "top_p": 10.0}
    signer = DownlinkSigner({"a": dc.KEY}, 7)
    plain = bytes(codec.encode_command(command, 3, 3))
    assert signer.command("b", command, 3, 3, b"model") == plain
    assert DownlinkSigner(None, 0).command("a", command, 3, 3, b"model") == plain


def test_keyed_devices_get_signed_commands_naming_the_model():
    model = dc.model_payload(8, 3)
    signer = DownlinkSigner({"a": dc.KEY}, 7)
    message = signer.command("a", {"round": 3, "version": 3}, 3, 3, model)
    payload = validate.check_signature(message, dc.KEY)
    cmd = validate.check_command(payload)
    assert validate.check_signed_fields(cmd) == digest(model)
    assert validate.command_order(cmd) == (7, 3, 3)
    cancel = signer.command("a", {"round": 3, "version": 3, "cancel": True}, 3, 3, model)
    assert "model_sha256" not in codec.decode_command(verify(dc.KEY, cancel))[1]


def test_session_epochs_only_grow(tmp_path):
    assert next_epoch(None, 1000.7) == 1000
    assert next_epoch(1000, 1000.2) == 1001  # a restart within the same second
    assert next_epoch(5000, 1000.0) == 5001  # a clock set back
    with pytest.raises(ValueError):
        next_epoch(None, 2.0**32)
    first = session_epoch(tmp_path / "state", now=2000.0)
    assert first == 2000
    assert session_epoch(tmp_path / "state", now=1500.0) == 2001
    assert json.loads((tmp_path / "state" / EPOCH_FILE).read_text()) == {"epoch": 2001}


def test_a_service_without_keys_stores_no_epoch(tmp_path):
    signer = downlink_signer(ServiceConfig(state_dir=str(tmp_path / "s")))
    assert signer.keys == {} and not (tmp_path / "s" / EPOCH_FILE).exists()
    (tmp_path / "keys.json").write_text(json.dumps({"a": dc.KEY.hex()}))
    cfg = ServiceConfig(state_dir=str(tmp_path / "s"), hmac_keys_file=str(tmp_path / "keys.json"))
    assert downlink_signer(cfg).keys == {"a": dc.KEY}
    assert (tmp_path / "s" / EPOCH_FILE).exists()


# -- transport and configuration --


def test_connect_packet_bytes():
    assert connect_packet("c", None, None, 30, None) == (
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01c"
    )
    packet = connect_packet("dev", "dev", "pw", 60, ("s", b"off", True, 1))
    assert packet[0] == 0x10 and packet[1] == len(packet) - 2
    assert packet[9] == 0x02 | 0x04 | 0x08 | 0x20 | 0xC0  # clean, will, QoS 1, retain, user+pw
    assert packet.endswith(b"\x00\x01s\x00\x03off\x00\x03dev\x00\x02pw")
    assert remaining_length(127) == b"\x7f" and remaining_length(128) == b"\x80\x01"
    assert remaining_length(2097152) == b"\x80\x80\x80\x01"
    long_id = connect_packet("x" * 200, None, None, 30, None)
    assert long_id[1:3] == remaining_length(len(long_id) - 3)


def test_the_cpython_transport_applies_the_limits_on_delivery():
    transport = PahoTransport("t", "127.0.0.1")
    seen, skipped = [], []
    transport.on_message = lambda topic, payload: seen.append((topic, len(payload)))
    transport.on_oversized = lambda topic, size: skipped.append((topic, size))
    transport.limits = {"m": 100}

    def deliver(topic, size):
        transport._dispatch(None, None, SimpleNamespace(topic=topic, payload=bytes(size)))

    deliver("m", 100)
    deliver("m", 101)
    deliver("other", limits.MAX_COMMAND + 1)
    assert seen == [("m", 100)] and skipped == [("m", 101), ("other", limits.MAX_COMMAND + 1)]


def test_tls_on_a_board_needs_the_brokers_ca_and_keys_are_checked():
    cfg = make_config({"device_id": "d", "broker": {"ssl": True}})  # CPython: system CAs
    with pytest.raises(AgentConfigError, match="ca_file"):
        check_security(cfg, "micropython")
    check_security(make_config({"device_id": "d", "broker": {"ssl": True, "ca_file": "ca"}}), "x")
    for key in ("xyz", "ab" * 8 + "a", "ab" * 15):
        with pytest.raises(AgentConfigError, match="hmac_key"):
            make_config({"device_id": "d", "hmac_key": key})
    assert make_config({"device_id": "d", "hmac_key": "ab" * 16})["hmac_key"] == "ab" * 16


def test_a_pem_ca_becomes_the_der_a_board_loads():
    der = bytes(range(256)) * 3
    pem = ssl.DER_cert_to_PEM_cert(der)
    assert ca_der(pem.encode()) == der == ssl.PEM_cert_to_DER_cert(pem)
    assert ca_der(b"junk before\n" + pem.encode() + pem.encode()) == der  # the first one
    assert ca_der(der) == der  # DER already
    with pytest.raises(ValueError):
        ca_der(pem.encode()[:-30])


def test_the_bundle_carries_the_brokers_ca(tmp_path):
    ca = tmp_path / "fleet-ca.crt"
    ca.write_text(ssl.DER_cert_to_PEM_cert(b"\x30\x03\x02\x01\x00"))
    config = make_config({"device_id": "b-1", "broker": {"ssl": True, "ca_file": str(ca)}})
    write_bundle(tmp_path / "board", config)
    assert (tmp_path / "board" / "fleet-ca.crt").read_bytes() == ca.read_bytes()
    written = json.loads((tmp_path / "board" / "config.json").read_text())
    assert written["broker"]["ca_file"] == "fleet-ca.crt"
    assert config["broker"]["ca_file"] == str(ca)  # the caller's config is left as it was
    # a name that is no file here stays as it is: it may already be on the board
    config["broker"]["ca_file"] = "on-board.der"
    write_bundle(tmp_path / "board2", config)
    written = json.loads((tmp_path / "board2" / "config.json").read_text())
    assert written["broker"]["ca_file"] == "on-board.der"


def test_the_agent_drops_its_residual_when_the_rounds_go_back():
    """A round numbered below the one that last updated the residual (a new session) uploads as
    a device that kept no residual; a later round sends it. P = 5 % leaves some of the probe
    model's non-zero Δ unsent."""
    model = dc.model_payload(dc.Probe().n, 1)

    def second_upload(first_round, second_round, first=None):
        p = dc.Probe().model(model)
        p.command(dc.command_payload(1, first_round, model, fields=dict(first or {}, top_p=5.0)))
        epoch = dc.EPOCH + (second_round < first_round)  # a new session of the service
        p.command(dc.command_payload(1, second_round, model, epoch, fields={"top_p": 5.0}))
        assert p.agent.rounds_done == 2 and p.agent.rejected == {}
        _, idx, values = codec.decode(verify(dc.KEY, p.updates()[-1]))
        return (list(idx), list(values)), p.agent.residual_round

    kept, last = second_upload(1, 4)
    never, _ = second_upload(1, 4, {"error_feedback": False})
    assert last == 4 and kept != never
    back, last = second_upload(4, 1)
    assert last == 1 and back == second_upload(4, 1, {"error_feedback": False})[0]


RETIRED_AT_DEFAULT = {
    "residual_decay": 1.0,
    "residual_max_away": 0,
    "head_init": "sgd",
    "head_ridge": 1.0,
}


def test_removed_settings_at_their_old_default_are_ignored_and_others_refused():
    """A command from an older service may still carry the removed settings: at their old
    defaults the round is the same as without them; any other value is a bad_setting."""
    model = dc.model_payload(dc.Probe().n, 1)
    uploads = []
    for fields in ({}, RETIRED_AT_DEFAULT, {"residual_decay": 1, "head_ridge": 1}):
        p = dc.Probe().model(model)
        p.command(dc.command_payload(1, 1, model, fields=fields))
        assert p.agent.rejected == {} and p.agent.rounds_done == 1
        uploads.append(p.updates()[-1])
    assert uploads[0] == uploads[1] == uploads[2]
    for key, value in (("head_init", "closed_form"), ("residual_decay", 0.9)):
        p = dc.Probe().model(model)
        p.command(dc.command_payload(1, 1, model, fields={key: value}))
        assert p.agent.rejected == {"command:bad_setting": 1} and p.agent.rounds_done == 0

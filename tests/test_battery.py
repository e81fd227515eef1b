"""device_agent/battery.py: devices that sleep: a training wake, a sensor wake, a day asleep,
a battery's life, the flash's writes and wear."""

import pytest

from device_agent import battery, energy, reports, transport

WORK = battery.round_work(75840, 371, 4512, 99, state_bytes=9427, sample_bytes=8, samples=30)
"""A sine round's figures (as benchmarks/battery.py reads them from the agent's round)."""


@pytest.fixture(params=sorted(energy.PROFILES))
def board(request):
    return energy.PROFILES[request.param]


def test_mqtt_control_packet_sizes_match_the_agents_packets():
    will = ("t" * battery.WILL_TOPIC_LEN, "m" * battery.WILL_LEN, True, 1)
    packet = transport.connect_packet("d" * 12, "u" * 12, "p" * 32, 30, will)
    assert battery.mqtt_connect_bytes(12, battery.WILL_TOPIC_LEN, battery.WILL_LEN, 12, 32) == len(
        packet
    )
    assert battery.mqtt_connect_bytes(5) == len(
        transport.connect_packet("a" * 5, None, None, 30, None)
    )
    assert battery.mqtt_unsubscribe_bytes(25) == len(transport.unsubscribe_packet(1, "t" * 25))
    assert battery.mqtt_subscribe_bytes(44) == 1 + 1 + 2 + 2 + 44 + 1
    assert len(reports.offline("nrf52-desk-1")) == battery.WILL_LEN


def test_a_training_wake_has_every_part_and_adds_them_up(board):
    parts = battery.training_wake_parts(board, WORK)
    assert list(parts) == [
        "wake",
        "associate",
        "connect",
        "fetch",
        "compute",
        "flash",
        "uplink",
        "receipt",
        "disconnect",
    ]
    assert all(mj >= 0 and s >= 0 for mj, s in parts.values())
    assert parts["compute"][0] == pytest.approx(energy.compute_mj(WORK["macs"], board))
    assert battery.training_wake_mj(board, WORK) == pytest.approx(
        sum(mj for mj, _ in parts.values())
    )


def test_the_model_is_fetched_only_when_its_version_changed(board):
    every = battery.training_wake_parts(board, WORK, fetch=1.0)
    never = battery.training_wake_parts(board, WORK, fetch=0.0)
    half = battery.training_wake_parts(board, WORK, fetch=0.5)
    assert never["fetch"] == (0.0, 0.0)
    assert every["fetch"][0] > 0
    assert half["fetch"][0] == pytest.approx(every["fetch"][0] / 2)
    bigger = battery.round_work(75840, 371, 40000, 99, 9427, 8, 30)
    assert battery.training_wake_mj(board, bigger) > battery.training_wake_mj(board, WORK)


def test_tls_adds_the_handshake_and_records(board):
    plain = battery.training_wake_parts(board, WORK)
    tls = battery.training_wake_parts(board, WORK, tls=True)
    handshake_mj, handshake_s = battery.tls_handshake_mj(board)
    assert handshake_s == pytest.approx(board["tls_cycles"] / board["cpu_hz"])
    assert tls["connect"][0] > plain["connect"][0] + handshake_mj * 0.99
    assert tls["connect"][1] == pytest.approx(plain["connect"][1] + handshake_s + 2 * battery.RTT_S)
    assert tls["uplink"][0] > plain["uplink"][0]


def test_a_reset_on_waking_costs_the_boot_and_the_imports():
    esp32, nrf = energy.PROFILES["esp32"], energy.PROFILES["nrf52840"]
    assert not esp32["sleep_keeps_ram"] and nrf["sleep_keeps_ram"]
    wake = battery.training_wake_parts(esp32, WORK)["wake"]
    assert wake[1] == pytest.approx(esp32["boot_s"] + esp32["import_s"])
    sensor = battery.sensor_wake_parts(esp32, WORK)["wake"]
    assert sensor[1] == pytest.approx(esp32["boot_s"])


def test_the_sample_ring_goes_to_flash_only_when_it_outgrows_kept_memory(board):
    small = battery.round_work(1, 1, 1, 1, 100, 8, 30)
    large = battery.round_work(1, 1, 1, 1, 100, board["retained_bytes"], 30)
    assert not battery.ring_in_flash(board, small)
    assert battery.ring_in_flash(board, large)
    assert battery.sensor_wake_parts(board, small)["ring"] == (0.0, 0.0)
    ring_mj = battery.sensor_wake_parts(board, large)["ring"][0]
    assert ring_mj == pytest.approx(battery.flash_write(board["retained_bytes"], board, True)[0])
    assert battery.sensor_wake_mj(board, large) > battery.sensor_wake_mj(board, small)


def test_flash_writes_program_pages_and_erase_blocks():
    board = energy.PROFILES["esp32"]
    assert battery.flash_write(0, board) == (0.0, 0.0, 0.0)
    mj, s, erases = battery.flash_write(9427, board)
    assert erases == pytest.approx(3 + battery.LFS_COMMIT_BYTES / 4096)
    pages = 37 + 1
    assert s == pytest.approx(pages * board["flash_page_s"] + erases * board["flash_block_s"])
    assert mj == pytest.approx(board["supply_v"] * board["flash_ma"] * s)
    _, _, appended = battery.flash_write(8, board, append=True)
    assert appended == pytest.approx((8 + battery.LFS_COMMIT_BYTES) / 4096)


def test_a_day_asleep_is_the_sleep_current_for_a_day():
    esp32 = energy.PROFILES["esp32"]
    assert battery.sleep_mj(esp32) == pytest.approx(3.3 * 0.010 * 86400)
    assert battery.sleep_mj(esp32, 3600) == pytest.approx(3.3 * 0.010 * 3600)


def test_a_days_energy_is_its_wakes_and_the_sleep_between_them(board):
    parts = battery.day_parts(board, WORK, 24, 720)
    train = battery.training_wake_parts(board, WORK)
    awake = 24 * sum(s for _, s in train.values()) + 720 * sum(
        s for _, s in battery.sensor_wake_parts(board, WORK).values()
    )
    assert parts["sleep"][1] == pytest.approx(86400 - awake)
    assert parts["sleep"][0] == pytest.approx(battery.sleep_mj(board, 86400 - awake))
    assert parts["compute"][0] == pytest.approx(24 * train["compute"][0])
    assert parts["sensor"][0] == pytest.approx(720 * battery.sensor_wake_mj(board, WORK))
    day = battery.day_mj(board, WORK, 24, 720)
    assert day == pytest.approx(sum(mj for mj, _ in parts.values()))
    assert battery.day_mj(board, WORK, 0, 0) == pytest.approx(battery.sleep_mj(board))
    assert battery.day_mj(board, WORK, 96, 2880) > day
    with pytest.raises(ValueError, match="more than a day"):
        battery.day_parts(board, WORK, 100000, 0)


def test_always_connected_baselines(board):
    connected = battery.day_connected_mj(board, WORK, 1)
    saving = battery.day_connected_mj(board, WORK, 1, power_save=True)
    assert saving < connected
    round_mj = energy.energy_mj(WORK["macs"], WORK["bytes_up"], 4512 + 99, board)
    assert connected == pytest.approx(energy.listen_energy_mj(0, 86400, board) + round_mj)
    assert energy.listen_energy_mj(0, 60, board, power_save=True) < energy.listen_energy_mj(
        0, 60, board
    )
    assert battery.day_mj(board, WORK, 1, 30, tls=True) < battery.day_connected_mj(
        board, WORK, 1, tls=True
    )


def test_battery_days():
    usable = battery.battery_mj()
    assert usable == pytest.approx(2000 * 3.6 * 3.7 * 0.8 * 1000)
    assert battery.battery_days(usable) == pytest.approx(1.0)
    assert battery.battery_days(usable / 100) == pytest.approx(100.0)
    assert battery.battery_days(1000.0, 1000, 3.0, 1.0) == pytest.approx(1000 * 3.6 * 3.0)
    with_loss = battery.battery_days(usable / 100, self_discharge=0.02)
    full = usable / 0.8
    assert with_loss == pytest.approx(usable / (usable / 100 + 0.02 * full / 30))


def test_flash_writes_and_wear():
    assert battery.flash_writes_per_day(24, 720, False) == 24
    assert battery.flash_writes_per_day(24, 720, True) == 744
    board = energy.PROFILES["esp32"]
    kept = battery.flash_erases_per_day(board, WORK, 24, 720)
    assert kept == pytest.approx(24 * battery.flash_write(9427, board)[2])
    ring = battery.round_work(1, 1, 1, 1, 9427, 3000, 30)
    assert battery.flash_erases_per_day(board, ring, 24, 720) > kept
    assert battery.flash_wear_years(0.0, 100) is None
    assert battery.flash_wear_years(365.0, 100) == pytest.approx(100000 * 100 / 365 / 365)
    assert battery.flash_wear_years(365.0, 100, 10000) == pytest.approx(10000 * 100 / 365 / 365)

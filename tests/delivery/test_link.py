"""Link emulation on a virtual clock: rates, RTT, traces, loss stalls, rung events. Nothing sleeps."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bitladder.delivery import (
    PROFILES,
    ConfigError,
    Download,
    Link,
    ShapedTransport,
    VirtualClock,
    load_trace,
    parse_duration,
    parse_rate,
)
from bitladder.delivery.link import make_link
from bitladder.errors import UsageError

from .conftest import make_package, serve_bytes


@pytest.mark.parametrize(("text", "bps"), [("100mbit", 100e6), ("1.1gbit", 1.1e9), ("50Mbit/s", 50e6),
                                           ("5m", 5e6), ("800kbit", 8e5), ("12345", 12345.0)])
def test_parse_rate(text: str, bps: float) -> None:
    assert parse_rate(text) == pytest.approx(bps)


@pytest.mark.parametrize("text", ["", "fast", "-5mbit", "0mbit", "5tbit"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="rate"):
        parse_rate(text)


def test_parse_duration() -> None:
    assert parse_duration("30ms") == pytest.approx(0.03)
    assert parse_duration("0.5s") == pytest.approx(0.5)
    assert parse_duration("2") == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_profiles_include_the_kpi_link_and_slower_cells() -> None:
    assert PROFILES["ts22261-model-download"].rate == pytest.approx(1.1e9)
    assert sorted(link.rate for name, link in PROFILES.items() if name.startswith("cell-")) == [5e6, 20e6, 100e6]


def test_bad_links_are_refused() -> None:
    with pytest.raises(ConfigError):
        Link(rate=0)
    with pytest.raises(ConfigError):
        Link(rate=1e6, loss=1.5)


def test_trace_finish_time_integrates_steps(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,bit_per_s\n0,8000\n1,16000\n")
    link = Link(trace=load_trace(trace))
    assert link.finish_time(0.0, 1000) == pytest.approx(1.0)       # 8000 bits at 8 kbit/s
    assert link.finish_time(0.0, 2000) == pytest.approx(1.5)       # 1 s at 8k, then 8000 bits at 16k
    assert link.finish_time(3.0, 2000) == pytest.approx(4.0)       # after the last step the rate holds


def test_trace_errors_are_typed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1000\n0,2000\n")
    with pytest.raises(ConfigError, match="increase"):
        load_trace(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "missing.csv")


def _client(data: bytes, link: Link, clock: VirtualClock) -> httpx.Client:
    return httpx.Client(transport=ShapedTransport(httpx.MockTransport(serve_bytes(data)), link, clock))


def test_rate_and_rtt_on_a_virtual_clock() -> None:
    clock = VirtualClock()
    body = _client(bytes(1_000_000), Link(rate=100e6, rtt=0.030), clock).get("http://test/x").content
    assert len(body) == 1_000_000
    assert clock.now() == pytest.approx(0.030 + 8e6 / 100e6)


def test_back_to_back_requests_share_the_link() -> None:
    clock = VirtualClock()
    client = _client(bytes(125_000), Link(rate=1e6, rtt=0.0), clock)
    client.get("http://test/x")
    client.get("http://test/x")
    assert clock.now() == pytest.approx(2.0)


def test_a_busy_reader_loses_no_link_time_within_the_receive_window() -> None:
    """Bytes keep arriving into the socket buffer while the reader works; beyond the window the link idles."""
    def fetch(pause: float) -> float:
        clock = VirtualClock()
        with _client(bytes(1_000_000), Link(rate=8e6, rtt=0.0), clock).stream("GET", "http://test/x") as response:
            for index, _ in enumerate(response.iter_bytes()):
                if index == 10:
                    clock.sleep(pause)  # the reader is busy (a decode, a swap, an overslept sleep)
        return clock.now()

    assert fetch(0.0) == pytest.approx(1.0)
    assert fetch(0.02) == pytest.approx(1.0)  # 20 KB late: inside the 256 KiB window
    assert fetch(1.0) == pytest.approx(2.0 - 256 * 1024 / 1e6)  # only a window's worth was buffered


def test_a_link_carries_no_bytes_before_the_response_starts() -> None:
    clock = VirtualClock()
    client = _client(bytes(125_000), Link(rate=1e6, rtt=0.0), clock)
    clock.sleep(5.0)  # idle link: its time is not banked for the next response
    client.get("http://test/x")
    assert clock.now() == pytest.approx(6.0)


def test_loss_stalls_are_deterministic() -> None:
    times = []
    for _ in range(2):
        clock = VirtualClock()
        _client(bytes(1_000_000), Link(rate=100e6, loss=0.1, stall=0.2, seed=7), clock).get("http://test/x")
        times.append(clock.now())
    assert times[0] == times[1]
    assert times[0] > 8e6 / 100e6 + 0.2      # at least one stall in 62 pieces at 10 %


def test_rung_events_on_an_emulated_cell(tmp_path: Path) -> None:
    path = make_package(tmp_path / "m.blad", rows=400)
    data = path.read_bytes()
    clock = VirtualClock()
    link = Link(rate=20e6, rtt=0.05)
    download = Download("http://test/m.blad", transport=ShapedTransport(
        httpx.MockTransport(serve_bytes(data)), link, clock), clock=clock)
    download.run()
    base, exact = download.events
    assert base.name == "int8" and exact.name == "exact"
    assert base.arrived is not None and base.verified is not None and exact.verified is not None
    assert 0.05 < base.verified < exact.verified
    # the base is verified once its last 16 KiB piece has crossed the link, not before
    assert base.verified >= link.finish_time(0.05, base.end) - 1e-9
    assert exact.verified == pytest.approx(link.finish_time(0.05, len(data)))


def test_rung_limited_fetch_on_the_virtual_link(tmp_path: Path) -> None:
    path = make_package(tmp_path / "m.blad", rows=400)
    data = path.read_bytes()
    clock = VirtualClock()
    download = Download("http://test/m.blad", rung="int8", clock=clock, transport=ShapedTransport(
        httpx.MockTransport(serve_bytes(data)), Link(rate=20e6, rtt=0.05), clock))
    download.run()
    (base,) = download.events
    assert download.stats.received == base.end                    # header, manifest, int8: nothing more
    assert download.stats.requests == 3                           # header, manifest, data
    assert clock.now() == pytest.approx(3 * 0.05 + 8 * base.end / 20e6, rel=0.01)


def test_make_link_applies_options_on_top_of_a_profile() -> None:
    base = PROFILES["cell-20m"]
    link = make_link("cell-20m", rtt="120ms", loss=0.01)
    assert link is not None
    assert (link.rate, link.rtt, link.loss) == (base.rate, 0.12, 0.01)
    assert make_link("cell-20m", rate="5mbit") == Link(rate=5e6, rtt=base.rtt)
    assert make_link("cell-20m") == base
    assert make_link(rate="5mbit", rtt="30ms", loss=0.02) == make_link("cell-5m", rate="5mbit", rtt="30ms", loss=0.02)
    assert make_link() is None and make_link(loss=0.0) is None


@pytest.mark.parametrize("options", [{"rtt": "30ms"}, {"loss": 0.1}, {"rate": "5mbit", "trace": "t.csv"},
                                     {"profile": "cell-2g"}], ids=["rtt-alone", "loss-alone", "rate-and-trace", "profile"])
def test_make_link_refuses_options_it_would_drop(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        make_link(**options)  # type: ignore[arg-type]
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)


def test_make_link_trace_replaces_a_profiles_rate(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,bit_per_s\n0,1e6\n2,4e6\n")
    link = make_link("cell-100m", trace=str(trace), loss=0.05)
    assert link == Link(rate=0.0, rtt=PROFILES["cell-100m"].rtt, trace=((0.0, 1e6), (2.0, 4e6)), loss=0.05)

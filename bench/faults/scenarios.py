"""The load and fault scenarios: each starts a server, attacks it, and returns an Outcome with figures and checks.

A scenario's docstring's first line says what it does; its checks state the expected behaviour. Where a
well-behaved client's throughput is compared, it runs once without the attack and once during it, on the
same server, seconds apart; the ratio is judged loosely (>= 0.5, or the worker had CPU to spare) because
the client shares its core with the attackers and the machine with other work.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import clients
import server_under_test as sut
from clients import Background
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

LOAD_SECONDS = 3
UNAFFECTED = 0.5  # the least share of its unattacked throughput the well-behaved client must keep
# Below this CPU share the worker was not what limited the well-behaved client during an attack: the
# client shares its core with the attackers and, on this machine, with other work.
SPARE_CPU = 0.5
# Between two attacking HTTP/2 connections: the attackers share the client core with the well-behaved
# client, and an unpaced Python attacker would measure that core, not the server.
ATTACK_PAUSE = 0.05


@dataclass
class Outcome:
    """One scenario's report: what was done, figures (label, value), checks (expectation, held) and notes."""

    name: str
    what: str
    figures: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    notes: str = ""

    @classmethod
    def of(cls, scenario) -> Outcome:
        """An empty Outcome named after the scenario function, saying what its docstring's first line says."""
        return cls(scenario.__name__, scenario.__doc__.split("\n")[0])

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _rate(result) -> str:
    return f"{result.requests_per_s:,.0f} req/s ({result.failures} failed)"


def _compare(outcome: Outcome, before, during, expect_no_failures: bool = True) -> None:
    """Adds the well-behaved client's figures with and without the attack, and the checks on them.

    `before` and `during` are (ClientResult, the worker's CPU share during that run)."""
    (before, cpu_before), (during, cpu_during) = before, during
    ratio = during.requests_per_s / before.requests_per_s if before.requests_per_s else 0.0
    outcome.figures += [("well-behaved client, no attack", f"{_rate(before)}, worker CPU {cpu_before:.0%}"),
                        ("well-behaved client, during the attack", f"{_rate(during)}, worker CPU {cpu_during:.0%}"),
                        ("throughput kept during the attack", f"{ratio:.2f}x")]
    outcome.checks.append((f"the well-behaved client keeps >= {UNAFFECTED:.1f}x of its throughput, or the worker "
                           f"had CPU to spare (< {SPARE_CPU:.0%}: the shared client core was the limit)",
                           ratio >= UNAFFECTED or cpu_during < SPARE_CPU))
    if expect_no_failures:
        outcome.checks.append(("no request of the well-behaved client fails", during.failures == 0))


def _measured(worker: int, load, *args, **kwargs):
    """(result of load(*args, **kwargs), the worker's CPU share meanwhile)."""
    cpu = sut.CpuWatch(worker)
    result = load(*args, **kwargs)
    return result, cpu.share()


# ---------------------------------------------------------------- memory


def idle_connections(workdir: Path) -> Outcome:
    """10,000 idle keep-alive connections (each made one request): the worker's memory per connection."""
    return _idle(Outcome.of(idle_connections), workdir, 10_000, tls=False)


def idle_tls_connections(workdir: Path) -> Outcome:
    """2,000 idle keep-alive TLS 1.3 connections (each made one request): the worker's memory per connection."""
    return _idle(Outcome.of(idle_tls_connections), workdir, 2_000,
                 tls=True)


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _idle(outcome: Outcome, workdir: Path, count: int, tls: bool) -> Outcome:
    """Opens `count` keep-alive connections that each make one request and then idle; memory before and after."""
    context = _client_tls()
    with sut.start(workdir, sut.pack_site(workdir), "--max-connections", str(count + 100), tls=tls) as server:
        worker = server.workers()[0]
        time.sleep(1.0)
        pss0, rss0 = sut.memory_kib(worker)
        supervisor_pss, _ = sut.memory_kib(server.pid)
        socks, answered = [], 0
        started = time.monotonic()
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for first in range(0, count, 500):
            batch = [clients.connect(server.tls_port or server.port) for _ in range(min(500, count - first))]
            if tls:
                batch = [context.wrap_socket(sock, server_hostname="localhost") for sock in batch]
            for sock in batch:
                sock.sendall(request)
            for sock in batch:
                answered += clients.read_response_head(sock).startswith(b"HTTP/1.1 200")
            socks += batch
        opened_in = time.monotonic() - started
        time.sleep(1.0)
        pss1, rss1 = sut.memory_kib(worker)
        fresh = clients.get(server.port)
        again = 0
        for sock in socks[:: count // 100]:  # 100 of them, spread over the opening order
            sock.sendall(request)
            again += clients.read_response_head(sock).startswith(b"HTTP/1.1 200")
        fds = sut.open_fds(worker)
        for sock in socks:
            sock.close()
        per_pss, per_rss = (pss1 - pss0) / count, (rss1 - rss0) / count
        kind = "TLS 1.3 " if tls else ""
        outcome.figures += [
            ("idle worker PSS / RSS (no connection)", f"{_mib(pss0)} / {_mib(rss0)}"),
            ("supervisor PSS", _mib(supervisor_pss)),
            (f"worker PSS / RSS with {count:,} idle {kind}connections", f"{_mib(pss1)} / {_mib(rss1)}"),
            (f"memory per idle keep-alive {kind}connection (PSS / RSS)", f"{per_pss:.1f} KiB / {per_rss:.1f} KiB"),
            ("connections opened and answered", f"{answered:,} in {opened_in:.1f} s"),
            ("worker's open file descriptors", f"{fds:,}"),
        ]
        outcome.checks += [
            (f"all {count:,} connections are answered 200 and held open", answered == count and fds >= count),
            ("100 of them, reused later, answer again", again == 100),
            ("a new client is served while they are open", fresh == 200),
            ("an idle worker's PSS is <= 20 MiB (issue 12)", pss0 <= 20 * 1024),
        ]
    return outcome


# ---------------------------------------------------------------- slow clients


def slowloris(workdir: Path) -> Outcome:
    """400 slowloris clients trickle one header line each 0.5 s; --header-timeout 3 must end them with 408."""
    outcome = Outcome.of(slowloris)
    count, header_timeout = 400, 3
    with sut.start(workdir, sut.pack_site(workdir), "--header-timeout", str(header_timeout)) as server:
        worker = server.workers()[0]
        before = _measured(worker, clients.wrk, server.port, LOAD_SECONDS)
        socks = [clients.connect(server.port) for _ in range(count)]
        ended_at = {}
        answers = {}
        started = time.monotonic()

        def trickle(stop):
            for sock in socks:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
                sock.setblocking(False)
            line = 0
            while not stop.is_set() and len(ended_at) < count:
                line += 1
                for index, sock in enumerate(socks):
                    if index in ended_at:
                        continue
                    try:
                        answer = sock.recv(4096)
                    except BlockingIOError:
                        answer = None
                    except ConnectionResetError:
                        answer = b""
                    if answer is not None:
                        ended_at[index] = time.monotonic() - started
                        answers[index] = answer
                        continue
                    try:
                        sock.send(b"X-%d: %d\r\n" % (line, line))
                    except OSError:
                        ended_at[index] = time.monotonic() - started
                        answers[index] = b""
                stop.wait(0.5)

        attack = Background(trickle)
        during = _measured(worker, clients.wrk, server.port, LOAD_SECONDS)
        deadline = time.monotonic() + header_timeout + 5
        while len(ended_at) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        attack.stop()
        for sock in socks:
            sock.close()
        got_408 = sum(1 for answer in answers.values() if answer.startswith(b"HTTP/1.1 408"))
        latest = max(ended_at.values(), default=float("nan"))
        _compare(outcome, before, during)
        outcome.figures += [
            ("slowloris connections ended by the server", f"{len(ended_at)} of {count}"),
            ("... of which answered 408", f"{got_408}"),
            ("latest end after the attack began", f"{latest:.1f} s (header timeout {header_timeout} s)"),
        ]
        outcome.checks += [
            ("every slowloris connection is ended", len(ended_at) == count),
            ("each gets 408 Request Timeout", got_408 == count),
            ("within the header timeout plus the 0.25 s tick and a 1.5 s margin", latest <= header_timeout + 1.75),
        ]
    return outcome


def slow_read(workdir: Path) -> Outcome:
    """100 clients request a 4 MiB file and never read it; --write-timeout 4 must drop them, memory bounded."""
    outcome = Outcome.of(slow_read)
    count, write_timeout = 100, 4
    with sut.start(workdir, sut.pack_site(workdir), "--write-timeout", str(write_timeout)) as server:
        worker = server.workers()[0]
        before = _measured(worker, clients.wrk, server.port, LOAD_SECONDS)
        pss0, rss0 = sut.memory_kib(worker)
        socks = [clients.connect(server.port, receive_buffer=4096) for _ in range(count)]
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        during = _measured(worker, clients.wrk, server.port, LOAD_SECONDS)
        pss1, rss1 = sut.memory_kib(worker)
        time.sleep(max(0.0, write_timeout + 1.5 - (time.monotonic() - started)))
        dropped, received = 0, 0
        for sock in socks:
            total = 0
            sock.settimeout(0.5)
            try:
                while chunk := sock.recv(1 << 20):
                    total += len(chunk)
                dropped += 1
            except ConnectionResetError:
                dropped += 1
            except socket.timeout:
                pass  # still open: not dropped
            received = max(received, total)
            sock.close()
        waited = time.monotonic() - started
        _compare(outcome, before, during)
        per_reader = (rss1 - rss0) / count
        outcome.figures += [
            ("worker PSS / RSS before", f"{_mib(pss0)} / {_mib(rss0)}"),
            (f"worker PSS / RSS with {count} stalled readers", f"{_mib(pss1)} / {_mib(rss1)}"),
            ("RSS growth per stalled reader", f"{per_reader:.0f} KiB (file: {sut.BIG_SIZE // 1024} KiB)"),
            ("stalled readers dropped by the server", f"{dropped} of {count}, checked {waited:.1f} s after sending"),
            ("most bytes one stalled reader got", f"{received:,}"),
        ]
        outcome.checks += [
            ("memory per stalled reader stays under 1 MiB (bodies are read as the socket drains)", per_reader < 1024),
            (f"every stalled reader is dropped after --write-timeout {write_timeout}", dropped == count),
        ]
    return outcome


def vanishing_clients(workdir: Path) -> Outcome:
    """600 clients request the 4 MiB file and vanish mid-response (half close, half reset), plaintext and TLS."""
    outcome = Outcome.of(vanishing_clients)
    count = 600
    with sut.start(workdir, sut.pack_site(workdir), tls=True) as server:
        worker = server.workers()[0]
        clients.get(server.port)
        time.sleep(0.5)
        fds0, (pss0, rss0) = sut.open_fds(worker), sut.memory_kib(worker)
        context = _client_tls()
        started = time.monotonic()
        for index in range(count):
            tls = index % 3 == 2
            sock = clients.connect(server.tls_port if tls else server.port)
            stream = context.wrap_socket(sock, server_hostname="localhost") if tls else sock
            stream.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = 0
            while got < 64 * 1024:
                got += len(stream.recv(65536))
            if index % 2:  # linger 0: close sends RST
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            stream.close()
        took = time.monotonic() - started
        deadline = time.monotonic() + 10
        while sut.open_fds(worker) > fds0 and time.monotonic() < deadline:
            time.sleep(0.1)
        settled = time.monotonic() - started - took
        fds1, (pss1, rss1) = sut.open_fds(worker), sut.memory_kib(worker)
        fresh = clients.get(server.port)
        errors = server.log_lines(r"Traceback|Error|error")
        outcome.figures += [
            ("clients that vanished", f"{count} in {took:.1f} s (every 3rd over TLS; odd ones with RST)"),
            ("worker fds before / after", f"{fds0} / {fds1} (settled {settled:.1f} s after the last)"),
            ("worker PSS / RSS before / after", f"{_mib(pss0)} / {_mib(rss0)} -> {_mib(pss1)} / {_mib(rss1)}"),
            ("error lines in the server's log", str(len(errors))),
        ]
        outcome.checks += [
            ("every connection's descriptor is released", fds1 <= fds0),
            ("the worker's RSS grows by less than 8 MiB", rss1 - rss0 < 8 * 1024),
            ("no error or traceback is logged", not errors),
            ("the server still serves", fresh == 200),
        ]
        if errors:
            outcome.notes = "\n".join(errors[:10])
    return outcome


# ---------------------------------------------------------------- floods


def _h2_flood_scenario(outcome: Outcome, frames, batch: int, workdir: Path) -> Outcome:
    """Floods with `frames` from one connection after another during an h2load run; each must get GOAWAY(0xb)."""
    with sut.start(workdir, sut.pack_site(workdir)) as server:
        worker = server.workers()[0]
        before = _measured(worker, clients.h2load, server.port, LOAD_SECONDS)
        rss0 = sut.rss_kib(worker)

        def attack(stop):
            results = []
            while not stop.is_set():
                results.append(clients.h2_flood(server.port, frames, batch, limit=1_000_000, seconds=5))
                stop.wait(ATTACK_PAUSE)
            return results

        flood = Background(attack)
        during = _measured(worker, clients.h2load, server.port, LOAD_SECONDS)
        results = flood.stop()
        rss1 = sut.rss_kib(worker)
        calmed = [r for r in results if r["goaway"] == clients.ENHANCE_YOUR_CALM and r["closed"]]
        _compare(outcome, before, during)
        frames_sent = [r["frames"] for r in results]
        outcome.figures += [
            ("attacking connections", str(len(results))),
            ("... ended with GOAWAY(ENHANCE_YOUR_CALM) and closed", str(len(calmed))),
            ("frames sent per attacking connection (min / max)",
             f"{min(frames_sent, default=0):,} / {max(frames_sent, default=0):,}"),
            ("time to GOAWAY (max)", f"{max((r['seconds'] for r in results), default=0):.2f} s"),
            ("worker RSS before / after", f"{_mib(rss0)} / {_mib(sut.rss_kib(worker))}"),
        ]
        outcome.checks += [
            ("every attacking connection gets GOAWAY(ENHANCE_YOUR_CALM) and is closed",
             bool(results) and len(calmed) == len(results)),
            ("the worker's RSS grows by less than 16 MiB", rss1 - rss0 < 16 * 1024),
        ]
    return outcome


_REQUEST_BLOCK = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"a"  # HPACK: GET, http, /, :authority a


def _rapid_reset(index):
    stream = 2 * index + 1
    return (HeadersFrame(stream, data=_REQUEST_BLOCK, flags=["END_HEADERS", "END_STREAM"]).serialize()
            + RstStreamFrame(stream, error_code=8).serialize())  # CANCEL


_SETTINGS = SettingsFrame(0).serialize()


def h2_rapid_reset(workdir: Path) -> Outcome:
    """HTTP/2 rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, over and over, during an h2load run."""
    return _h2_flood_scenario(Outcome.of(h2_rapid_reset), _rapid_reset, 50, workdir)


def h2_settings_flood(workdir: Path) -> Outcome:
    """SETTINGS flood: empty SETTINGS frames as fast as the socket takes them, during an h2load run."""
    return _h2_flood_scenario(Outcome.of(h2_settings_flood),
                              lambda index: _SETTINGS, 50, workdir)


def h2_ping_flood(workdir: Path) -> Outcome:
    """PING flood: PING frames as fast as the socket takes them, during an h2load run."""
    return _h2_flood_scenario(Outcome.of(h2_ping_flood),
                              lambda index: PingFrame(0, opaque_data=index.to_bytes(8, "big")).serialize(), 50,
                              workdir)


def _flood_check(outcome, label, server, first, filler, limit, expect):
    """One flood on a fresh connection: sends until answered; figures and a check that `expect` came back."""
    with clients.connect(server.port) as sock:
        started = time.monotonic()
        sent, answer = clients.send_until_answered(sock, first, filler, limit)
        took = time.monotonic() - started
        closed = clients.closed_by_peer(sock, 5)
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") or "(closed without an answer)"
    outcome.figures.append((label, f"{status} after {sent:,} bytes, {took:.2f} s; closed: {closed}"))
    outcome.checks.append((f"{label}: {expect.decode()} and the connection closes", answer.startswith(expect) and closed))


def header_flood(workdir: Path) -> Outcome:
    """Header floods: endless header lines, one endless header, 100,000 tiny headers, an h2 CONTINUATION flood."""
    outcome = Outcome.of(header_flood)
    with sut.start(workdir, sut.pack_site(workdir)) as server:
        worker = server.workers()[0]
        rss0 = sut.rss_kib(worker)
        limit = 64 << 20
        _flood_check(outcome, "endless header lines", server, b"GET / HTTP/1.1\r\nHost: a\r\n",
                     b"X-Flood: " + b"a" * 50 + b"\r\n", limit, b"HTTP/1.1 431")
        _flood_check(outcome, "one endless header value", server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ",
                     b"b" * 4096, limit, b"HTTP/1.1 431")
        _flood_check(outcome, "100,000 tiny headers in one write", server,
                     b"GET / HTTP/1.1\r\nHost: a\r\n" + b"a:\r\n" * 100_000 + b"\r\n", b"a:\r\n", limit,
                     b"HTTP/1.1 431")
        _flood_check(outcome, "an endless request line", server, b"GET /", b"c" * 4096, limit, b"HTTP/1.1 414")
        result = _continuation_flood(server.port)
        outcome.figures.append(("h2 CONTINUATION flood", f"{result['frames']:,} frames of 16 KiB sent, GOAWAY "
                                f"code {result['goaway']}, closed {result['closed']} after {result['seconds']:.2f} s"))
        outcome.checks.append(("h2 CONTINUATION flood: the connection is ended before 64 MiB of headers",
                               result["closed"] and result["frames"] * 16 < 64 * 1024))
        rss1 = sut.rss_kib(worker)
        outcome.figures.append(("worker RSS before / after", f"{_mib(rss0)} / {_mib(rss1)}"))
        outcome.checks.append(("the worker's RSS grows by less than 16 MiB", rss1 - rss0 < 16 * 1024))
        outcome.checks.append(("the server still serves", clients.get(server.port) == 200))
    return outcome


def _continuation_flood(port):
    """HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB that never end the header block."""
    sock, conn = clients.h2_client(port)
    block = conn.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"),
                                 (b":path", b"/")])
    first = HeadersFrame(1, data=block).serialize()  # no END_HEADERS
    filler = ContinuationFrame(1, data=b"\x40\x01x\x01y" * (16384 // 5)).serialize()  # literal headers x: y
    started = time.monotonic()
    with sock:
        sent, received, closed = clients.send_until_closed(sock, first, filler, 64 << 20)
    return {"frames": sent // len(filler), "goaway": clients.goaway_code(received), "closed": closed,
            "seconds": time.monotonic() - started}


def body_flood(workdir: Path) -> Outcome:
    """Body floods: a 10 GB Content-Length, an endless chunked body, an endless h2 DATA stream (limit 1 MiB)."""
    outcome = Outcome.of(body_flood)
    with sut.start(workdir, sut.pack_site(workdir), "--max-body-bytes", str(1 << 20)) as server:
        worker = server.workers()[0]
        rss0 = sut.rss_kib(worker)
        limit = 256 << 20
        _flood_check(outcome, "Content-Length: 10000000000", server,
                     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n", b"d" * 65536, limit,
                     b"HTTP/1.1 413")
        _flood_check(outcome, "endless chunked body", server,
                     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"4000\r\n" + b"e" * 0x4000 + b"\r\n", limit, b"HTTP/1.1 413")
        sock, conn = clients.h2_client(server.port)
        conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")])
        with sock:
            sent, answer = clients.send_until_answered(sock, conn.data_to_send(),
                                                       DataFrame(1, data=b"f" * 16384).serialize(), limit)
            closed = clients.closed_by_peer(sock, 3)
        outcome.figures.append(("endless h2 DATA on one stream", f"answered after {sent:,} bytes; connection closed: "
                                f"{closed}"))
        outcome.checks.append(("endless h2 DATA: the server answers before 16 MiB (flow control)",
                               bool(answer) and sent < 16 << 20))
        rss1 = sut.rss_kib(worker)
        outcome.figures.append(("worker RSS before / after", f"{_mib(rss0)} / {_mib(rss1)}"))
        outcome.checks.append(("the worker's RSS grows by less than 16 MiB", rss1 - rss0 < 16 * 1024))
        outcome.checks.append(("the server still serves", clients.get(server.port) == 200))
    return outcome


def pipeline_flood(workdir: Path) -> Outcome:
    """20 clients each pipeline 2,000,000 GETs (54 MB) and read nothing: reading stops, memory bounded, dropped."""
    outcome = Outcome.of(pipeline_flood)
    clients_count, count, write_timeout = 20, 2_000_000, 10  # the 20 take seconds to fill their buffers
    with sut.start(workdir, sut.pack_site(workdir), "--write-timeout", str(write_timeout)) as server:
        worker = server.workers()[0]
        rss0 = sut.rss_kib(worker)
        data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * count
        socks = [clients.connect(server.port, receive_buffer=4096) for _ in range(clients_count)]
        sent_each = [0] * clients_count
        started = progress_at = time.monotonic()
        while time.monotonic() - progress_at < 0.5:  # round-robin until half a second without progress
            for index, sock in enumerate(socks):
                sock.settimeout(0.0)
                try:
                    sent_each[index] += sock.send(data[sent_each[index]:sent_each[index] + (1 << 20)])
                    progress_at = time.monotonic()
                except (BlockingIOError, ConnectionResetError, BrokenPipeError):  # full, or dropped already
                    pass
            time.sleep(0.005)
        stalled_after = time.monotonic() - started
        fresh = clients.get(server.port)
        # Reading nothing (reading would let the server write again): the RSS peak while the server works
        # through what it read, then its CPU once it has nothing left to do but wait.
        rss1 = sut.rss_kib(worker)
        while time.monotonic() - started < stalled_after + write_timeout - 3:
            time.sleep(0.25)
            rss1 = max(rss1, sut.rss_kib(worker))
        cpu = sut.CpuWatch(worker)
        time.sleep(2.5)
        share = cpu.share()
        while clients.established(server.port) and time.monotonic() - started < stalled_after + write_timeout + 5:
            time.sleep(0.1)
        dropped_after = time.monotonic() - started - stalled_after
        dropped = clients_count - clients.established(server.port)
        for sock in socks:
            sock.close()
        per_connection = (rss1 - rss0) / clients_count
        outcome.figures += [
            ("bytes each client sent before its connection stalled", f"{min(sent_each):,} to {max(sent_each):,} of "
             f"{len(data):,} (both ends' kernel buffers included); all stalled in {stalled_after:.1f} s"),
            (f"worker RSS before / peak with {clients_count} stalled pipelining clients", f"{_mib(rss0)} / {_mib(rss1)}"),
            ("RSS growth per stalled pipelining client", f"{per_connection:,.0f} KiB"),
            ("worker CPU while they stall (the 2.5 s before the write timeout)", f"{share:.1%}"),
            ("connections dropped by the server", f"{dropped} of {clients_count}, all {dropped_after:.1f} s after the "
             "last stalled"),
        ]
        outcome.checks += [
            ("the server stops reading: every connection stalls before its 54 MB are sent",
             max(sent_each) < len(data)),
            ("memory per stalled pipelining client stays under 4 MiB", per_connection < 4 * 1024),
            ("the worker does not spin while they stall (CPU < 10%)", share < 0.10),
            (f"every connection is dropped within 5 s after --write-timeout {write_timeout}", dropped == clients_count),
            ("another client is served meanwhile", fresh == 200),
        ]
    return outcome


# ---------------------------------------------------------------- process faults


def worker_sigkill(workdir: Path) -> Outcome:
    """Two workers under wrk load; one is killed with SIGKILL: its connections fail, the other serves, it restarts."""
    outcome = Outcome.of(worker_sigkill)
    with sut.start(workdir, sut.pack_site(workdir), workers=2) as server:
        victim, survivor = server.workers()
        killed_at = {}

        def kill_later(stop):
            stop.wait(1.5)
            killed_at["t"] = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            while not stop.is_set():
                workers = server.workers()
                if len(workers) == 2 and victim not in workers:
                    return time.monotonic() - killed_at["t"]
                time.sleep(0.01)
            return None

        killer = Background(kill_later)
        during = clients.wrk(server.port, 5, connections=32)
        restarted_in = killer.stop()
        if restarted_in is None:
            time.sleep(3)
        after = clients.wrk(server.port, LOAD_SECONDS, connections=32)
        workers = server.workers()
        logged = server.log_lines(r"was killed by SIGKILL; restarting")
        outcome.figures += [
            ("wrk during the kill (5 s, 32 connections)", _rate(during)),
            ("new worker forked after", f"{restarted_in:.2f} s" if restarted_in is not None else "not within 5 s"),
            ("wrk after the restart", _rate(after)),
            ("supervisor's log line", logged[0].strip() if logged else "(none)"),
        ]
        outcome.checks += [
            ("the surviving worker keeps serving during the kill", during.requests > 0 and survivor in workers),
            ("the killed worker is replaced within 3 s", restarted_in is not None and restarted_in < 3),
            ("the supervisor logs the kill and the restart", bool(logged)),
            ("after the restart no request fails", after.failures == 0),
        ]
    return outcome


def reloads(workdir: Path) -> Outcome:
    """50 reloads (SIGHUP, alternating two versions of the site) under wrk load: zero failed requests."""
    outcome = Outcome.of(reloads)
    count = 50
    tars = [sut.pack_site(workdir / f"v{version}", marker=f"v{version}") for version in (1, 2)]
    live = workdir / "live.tar"
    os.link(tars[0], live)
    with sut.start(workdir, live, workers=2) as server:
        seen = set()

        def reload_repeatedly(stop):
            for index in range(count):
                staged = workdir / "staged.tar"
                os.link(tars[(index + 1) % 2], staged)
                os.replace(staged, live)
                os.kill(server.pid, signal.SIGHUP)
                stop.wait(0.2)
                with clients.connect(server.port) as sock:
                    sock.sendall(b"GET /version.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    seen.add(clients.read_response_head(sock).rsplit(b"\r\n\r\n", 1)[-1].strip())
            return index + 1

        started = time.monotonic()
        reloader = Background(reload_repeatedly)
        result = clients.wrk(server.port, 14, connections=16)
        sent = reloader.stop()
        took = time.monotonic() - started
        failures = server.log_lines(r"reload failed")
        outcome.figures += [
            ("reloads signalled", f"{sent} in {took:.1f} s"),
            ("wrk during the reloads (14 s, 16 connections)", _rate(result)),
            ("site versions served between reloads", ", ".join(sorted(v.decode() for v in seen))),
            ("'reload failed' lines", str(len(failures))),
        ]
        outcome.checks += [
            (f"all {count} reloads are signalled during the load", sent == count),
            ("no request fails", result.failures == 0 and result.requests > 0),
            ("both versions of the site were served", seen >= {b"v1", b"v2"}),
            ("no reload fails", not failures),
        ]
    return outcome


# ---------------------------------------------------------------- resource exhaustion

RATE_LIMIT_SCRIPT = r"""
#include "zeroserve.h"

/* /limited?key=K: one bucket per key (3 requests per hour), 200 or 429. */
ZS_ENTRY zs_u64 entry(void)
{
    char path[32];
    char key[128];
    zs_req_path(path, sizeof path);
    if (zs_strcmp(path, "/limited") != 0)
        return 0;
    zs_s64 key_len = zs_req_query_param(ZS_STR("key"), key, sizeof key);
    if (key_len < 0)
        key_len = 0;
    zs_s64 result = zs_rate_limit(key, (zs_u64)key_len, 0, 0, 3);
    zs_respond(result == 0 ? 200 : 429, "ok", 2);
    return 0;
}
"""


def full_disk(workdir: Path) -> Outcome:
    """The ratelimit snapshot on a full 256 KiB tmpfs at shutdown: one clear error, the previous snapshot intact."""
    outcome = Outcome.of(full_disk)
    disk = workdir / "disk"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        tar = sut.pack_site(workdir, scripts={"10-limit.c": RATE_LIMIT_SCRIPT})
        state = disk / "ratelimit.msgpack"
        flags = ("--plugins", "ratelimit", "--ratelimit-state", str(state))
        with sut.start(workdir / "first", tar, *flags) as server:
            for key in range(20):
                clients.get(server.port, f"/limited?key=k{key}")
        previous = state.read_bytes()
        with sut.start(workdir / "second", tar, *flags, name="second") as server:
            keys = 8000  # about 40 bytes each in the snapshot: more than the disk has left
            started = time.monotonic()
            _many_keys(server.port, keys)
            loaded_in = time.monotonic() - started
            filler = disk / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            served_while_full = clients.get(server.port, "/limited?key=full")
        exit_code = server.process.popen.returncode
        errors = server.log_lines(r"\[ratelimit\] cannot save")
        leftovers = sorted(p.name for p in disk.iterdir() if p.name not in ("ratelimit.msgpack", "filler"))
        intact = state.read_bytes() == previous
        outcome.figures += [
            ("disk", "tmpfs, size=256k, filled with dd after the buckets were made"),
            ("previous snapshot", f"{len(previous):,} bytes; distinct keys made: {keys:,} in {loaded_in:.1f} s"),
            ("free bytes on the disk at shutdown", f"{free:,}"),
            ("server's exit code", str(exit_code)),
            ("error line", errors[0].strip() if errors else "(none)"),
            ("files left on the disk besides the snapshot and the filler", ", ".join(leftovers) or "none"),
        ]
        outcome.checks += [
            ("the server serves while its state disk is full", served_while_full == 200),
            ("one error line names the file and the reason", len(errors) == 1 and "No space left" in errors[0]
             and str(state) in errors[0]),
            ("the previous snapshot is intact", intact),
            ("no temporary file is left behind", not leftovers),
            ("the server still exits 0", exit_code == 0),
        ]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return outcome


def _many_keys(port: int, keys: int) -> None:
    """Makes `keys` distinct buckets with pipelined keep-alive requests on a few connections."""
    per_connection = 500
    for first in range(0, keys, per_connection):
        with clients.connect(port) as sock:
            batch = b"".join(b"GET /limited?key=key-%06d HTTP/1.1\r\nHost: a\r\n\r\n" % key
                             for key in range(first, min(keys, first + per_connection)))
            sock.sendall(batch + b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            while sock.recv(1 << 20):
                pass


def fd_exhaustion(workdir: Path) -> Outcome:
    """Under RLIMIT_NOFILE 256, 400 connections: accepting pauses at the cap without spinning, then recovers.

    The excess waits in the listen queue and is accepted once connections close."""
    outcome = Outcome.of(fd_exhaustion)
    limit, count = 256, 400
    # prlimit on the running worker is refused (it dropped its privileges), so the whole server starts under it.
    # A long idle timeout keeps the served connections open, so the cap holds for the whole scenario.
    with sut.start(workdir, sut.pack_site(workdir), "--idle-timeout", "120",
                   wrapper=("prlimit", f"--nofile={limit}:{limit}")) as server:
        worker = server.workers()[0]
        cap_line = server.log_lines(r"RLIMIT_NOFILE is")
        log_lines0 = len(server.log().splitlines())
        socks, outcomes = [], {"200": 0, "503": 0, "closed without answer": 0, "no answer": 0}
        for _ in range(count):
            sock = clients.connect(server.port, timeout=0.5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            socks.append(sock)
        for index, sock in enumerate(socks):
            if index >= limit - 64:
                sock.settimeout(0.05)  # beyond the cap: only waiting in the listen queue is expected
            try:
                head = clients.read_response_head(sock)
                outcomes[head[9:12].decode() if head.startswith(b"HTTP/1.1 ") else "closed without answer"] += 1
            except socket.timeout:
                outcomes["no answer"] += 1
            except ConnectionResetError:
                outcomes["closed without answer"] += 1
        fds = sut.open_fds(worker)
        time.sleep(2.5)  # the refused connections' lingering closes end
        cpu = sut.CpuWatch(worker)
        probes = [clients.get(server.port, timeout=0.3) for _ in range(10)]
        time.sleep(3)
        exhausted_cpu = cpu.share()
        log_lines = server.log().splitlines()[log_lines0:]
        for sock in socks:
            sock.close()
        closed_at = time.monotonic()
        recovered = None
        while time.monotonic() - closed_at < 10:
            if clients.get(server.port, timeout=1) == 200:
                recovered = time.monotonic() - closed_at
                break
            time.sleep(0.05)
        outcome.figures += [
            ("worker RLIMIT_NOFILE", str(limit)),
            ("worker's start-up notice", cap_line[0].strip() if cap_line else "(none)"),
            (f"{count} connections, each sending a request", ", ".join(f"{k} {v}" for k, v in outcomes.items())),
            ("worker fds while exhausted", str(fds)),
            ("new connections while exhausted", ", ".join(str(status) for status in probes) + " (0: no answer)"),
            ("worker CPU over 3 s while exhausted", f"{exhausted_cpu:.1%}"),
            ("log lines while exhausted", f"{len(log_lines)}" + (f": {log_lines[0][:120]}" if log_lines else "")),
            ("first 200 after the connections closed", f"{recovered:.2f} s" if recovered is not None else "none in 10 s"),
        ]
        outcome.checks += [
            ("the worker does not spin while out of descriptors (CPU < 10%)", exhausted_cpu < 0.10),
            ("it logs at most a few lines about it", len(log_lines) <= 5),
            ("it serves new connections within 2 s of descriptors coming free",
             recovered is not None and recovered < 2),
            ("connections up to the cap are served, those beyond wait in the listen queue",
             outcomes["200"] >= limit - 64 and outcomes["200"] + outcomes["no answer"] == count),
            ("a new connection while the cap is reached is not accepted", not any(probes)),
        ]
    return outcome


SCENARIOS = {
    "idle_connections": idle_connections,
    "idle_tls_connections": idle_tls_connections,
    "slowloris": slowloris,
    "slow_read": slow_read,
    "vanishing_clients": vanishing_clients,
    "h2_rapid_reset": h2_rapid_reset,
    "h2_settings_flood": h2_settings_flood,
    "h2_ping_flood": h2_ping_flood,
    "header_flood": header_flood,
    "body_flood": body_flood,
    "pipeline_flood": pipeline_flood,
    "worker_sigkill": worker_sigkill,
    "reloads": reloads,
    "full_disk": full_disk,
    "fd_exhaustion": fd_exhaustion,
}

#!/usr/bin/python3
"""The network limit our transport is measured against: ucx_perftest.

Runs a ucx_perftest server and client on loopback (UCX_TLS / UCX_NET_DEVICES
as given, tcp on lo by default, the path our tests and benches emulate) and
returns the bandwidth of the client's final line in bytes per second.

Units: ucx_perftest's "MB/s" columns are MiB/s (2**20 bytes). With 4 MiB
messages a run printed an overall overhead of 1061.845 us and 3767.03 MB/s:
4194304 / 1061.845e-6 / 2**20 = 3767.0. measure() converts to bytes/s and
checks the column against message size / overall overhead.

Used as a module:
    import ucx_limit
    bytes_per_second = ucx_limit.measure(message_bytes=4 << 20)
or from the shell (prints JSON):
    /usr/bin/python3 bench/ucx_limit.py --message-bytes 4194304 --repeats 3
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import time

PERFTEST = shutil.which("ucx_perftest") or "/usr/bin/ucx_perftest"
MIB = 1 << 20


class PerftestError(RuntimeError):
    pass


def _free_port():
    """A TCP port nobody listens on right now (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port):
    """Whether some socket listens on `port` (from /proc/net/tcp{,6}).

    Probing with connect() would be taken by ucx_perftest as its client.
    """
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def _parse_final(output):
    """The client's "Final:" line as a dict of floats."""
    for line in output.splitlines():
        if line.startswith("Final:"):
            v = line.split()[1:]
            if len(v) < 8:
                break
            return {
                "iterations": int(v[0]),
                "latency_median_us": float(v[1]),
                "overhead_average_us": float(v[2]),
                "overhead_overall_us": float(v[3]),
                "bandwidth_average_mib_s": float(v[4]),
                "bandwidth_overall_mib_s": float(v[5]),
                "message_rate_average": float(v[6]),
                "message_rate_overall": float(v[7]),
            }
    raise PerftestError("no 'Final:' line in ucx_perftest output:\n" + output[-2000:])


def run(message_bytes=4 << 20, tls="tcp", net_devices="lo", iterations=None,
        test="tag_bw", timeout=120.0):
    """One server + client run; the parsed final line plus what was asked."""
    if iterations is None:
        # About 2 GiB of traffic, at least 100 messages.
        iterations = max(100, (2 << 30) // max(message_bytes, 1))
    env = dict(os.environ)
    if tls:
        env["UCX_TLS"] = tls
    if net_devices:
        env["UCX_NET_DEVICES"] = net_devices
    common = ["-t", test, "-s", str(message_bytes), "-n", str(iterations)]
    for attempt in range(3):
        port = _free_port()
        server = subprocess.Popen([PERFTEST, *common, "-p", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while not _listening(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if server.poll() is not None:
                out = server.communicate()[0]
                if attempt < 2 and "in use" in out.lower():
                    continue  # someone took the port meanwhile
                raise PerftestError("ucx_perftest server exited:\n" + out[-2000:])
            client = subprocess.run([PERFTEST, "127.0.0.1", *common, "-p", str(port)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=timeout)
            if client.returncode != 0:
                raise PerftestError(f"ucx_perftest client exit {client.returncode}:\n"
                                    + client.stdout[-2000:])
            server.wait(timeout=30)
            result = _parse_final(client.stdout)
            break
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    bytes_per_second = result["bandwidth_overall_mib_s"] * MIB
    # The column is MiB/s: it must agree with size / overall overhead.
    if test.endswith("_bw") and result["overhead_overall_us"] > 0:
        implied = message_bytes / (result["overhead_overall_us"] * 1e-6)
        if abs(implied - bytes_per_second) > 0.02 * bytes_per_second:
            raise PerftestError(f"bandwidth column {result['bandwidth_overall_mib_s']} MiB/s does"
                                f" not match {message_bytes} B / "
                                f"{result['overhead_overall_us']} us")
    result.update(test=test, message_bytes=message_bytes, tls=tls, net_devices=net_devices,
                  bytes_per_second=bytes_per_second)
    return result


def measure(message_bytes=4 << 20, tls="tcp", net_devices="lo", iterations=None,
            test="tag_bw"):
    """ucx_perftest's overall bandwidth in bytes per second (one run)."""
    return run(message_bytes, tls, net_devices, iterations, test)["bytes_per_second"]


def ucx_version():
    try:
        out = subprocess.run(["ucx_info", "-v"], stdout=subprocess.PIPE, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("# Version"):
            return line.split()[-1]
    return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--message-bytes", type=int, default=4 << 20)
    p.add_argument("--tls", default="tcp", help="UCX_TLS ('' leaves it unset)")
    p.add_argument("--net-devices", default="lo", help="UCX_NET_DEVICES ('' leaves it unset)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--test", default="tag_bw")
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    runs = [run(a.message_bytes, a.tls, a.net_devices, a.iterations, a.test)
            for _ in range(a.repeats)]
    rates = [r["bytes_per_second"] for r in runs]
    print(json.dumps({
        "test": a.test,
        "message_bytes": a.message_bytes,
        "tls": a.tls,
        "net_devices": a.net_devices,
        "iterations": runs[0]["iterations"],
        "ucx_version": ucx_version(),
        "bytes_per_second": statistics.median(rates),
        "bytes_per_second_runs": rates,
        "gb_per_second": statistics.median(rates) / 1e9,
        "unit_note": "ucx_perftest prints MiB/s under 'MB/s'; converted with 2**20",
    }, indent=2))


if __name__ == "__main__":
    main()

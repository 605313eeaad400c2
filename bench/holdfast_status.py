"""holdfast_status: GetStatus of a holdfastd over its Unix socket, for the benchmarks.

Debian's Python has no gRPC module, and the benchmarks poll every daemon many times a second while
they time it, so spawning the `holdfast` CLI per poll would load the machine being measured. This
speaks just enough HTTP/2 for one unary call and decodes the GetStatusResponse fields the benchmarks
read (proto/holdfast/v1/snapshot.proto).
"""

from __future__ import annotations

import socket
import struct


def _varint(buf: bytes, i: int):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> dict:
    """Protobuf wire format: field number -> list of values (ints or bytes)."""
    out: dict = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(num, []).append(v)
    return out


def _int(f: dict, num: int, default: int = 0, signed: bool = False) -> int:
    v = f.get(num, [default])[-1]
    if signed and v >= 1 << 63:
        v -= 1 << 64
    return v


def _str(f: dict, num: int) -> str:
    return f.get(num, [b""])[-1].decode()


def decode_status(msg: bytes) -> dict:
    """GetStatusResponse (proto/holdfast/v1/snapshot.proto), the fields the bench reads."""
    f = _fields(msg)
    out = {"node_id": _str(f, 1), "memory_budget_bytes": _int(f, 2),
           "memory_used_bytes": _int(f, 3), "memory_pooled_bytes": _int(f, 4),
           "background_verifications": _int(f, 7), "cluster": None}
    if 8 in f:
        c = _fields(f[8][-1])
        jobs = {}
        for raw in c.get(11, []):
            j = _fields(raw)
            jobs[_str(j, 1)] = {"newest_protected_step": _int(j, 2, signed=True),
                                "restore_point": _int(j, 3, signed=True)}
        members = []
        for raw in c.get(5, []):
            m = _fields(raw)
            members.append({"node_id": _str(m, 1), "up": bool(_int(m, 2)),
                            "rebuilding": bool(_int(m, 4))})
        out["cluster"] = {"group": _int(c, 2), "position": _int(c, 3), "members": members,
                          "rebuilding": bool(_int(c, 6)), "parity_bytes": _int(c, 7),
                          "rounds_protected": _int(c, 8), "rounds_failed": _int(c, 9),
                          "versions_rebuilt": _int(c, 10), "jobs": jobs,
                          "last_error": _str(c, 12)}
    return out


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def _hpack_literal(name: bytes, value: bytes) -> bytes:
    # Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("holdfastd closed the connection")
        buf += chunk
    return buf


def get_status(socket_path: str, timeout: float = 2.0) -> dict:
    """One GetStatus call; raises on any failure."""
    # The Admin service's: every job (the Snapshot service shows only the
    # caller's job, docs/security.md).
    path = b"/holdfast.v1.Admin/GetStatus"
    headers = (b"\x83\x86"  # :method POST, :scheme http (static table 3, 6)
               + b"\x04" + bytes([len(path)]) + path  # :path, indexed name 4
               + b"\x01\x09localhost"  # :authority, indexed name 1
               + _hpack_literal(b"content-type", b"application/grpc")
               + _hpack_literal(b"te", b"trailers"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0)
                  + _frame(1, 0x4, 1, headers)  # END_HEADERS
                  + _frame(0, 0x1, 1, b"\x00\x00\x00\x00\x00"))  # empty message, END_STREAM
        data = b""
        while True:
            head = _recv_exact(s, 9)
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = _recv_exact(s, length)
            if ftype == 4 and not flags & 0x1:
                s.sendall(_frame(4, 0x1, 0))  # SETTINGS ACK
            elif ftype == 6 and not flags & 0x1:
                s.sendall(_frame(6, 0x1, 0, payload))  # PING ACK
            elif ftype == 7:
                raise ConnectionError(f"GOAWAY from holdfastd: {payload[8:]!r}")
            elif ftype == 3 and stream == 1:
                raise ConnectionError("holdfastd reset the GetStatus stream")
            elif ftype == 0 and stream == 1:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                data += payload
            if stream == 1 and ftype in (0, 1) and flags & 0x1:  # END_STREAM
                break
    if len(data) < 5:
        raise ConnectionError("GetStatus answered without a message (an error status)")
    n = int.from_bytes(data[1:5], "big")
    return decode_status(data[5:5 + n])

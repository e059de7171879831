#!/usr/bin/env python3
"""A reference client for the sited hub protocol, written from PROTOCOL.md alone, with nothing
but Python's standard library (socket, ssl, hmac, hashlib, secrets).

It proves a third party can implement the spec:

  1. connects to the hub's TLS port and accepts only the certificate whose SHA-256 is pinned
     (what `sitectl cert` prints);
  2. authenticates with CHAL/AUTH and a key made by `sitectl key add NAME --role actuator`;
  3. registers as an actuator (DEVICE NAME TYPE relay) and answers the operator's commands
     (`sitectl send NAME ...`) with `ACK <command>`, for --commands of them;
  4. sends a cycle of ten signed seed-001 datagrams (SIG1 envelope) to the hub's UDP port and
     prints the STATUS reply.

Usage:
  reference_client.py --tls HOST:PORT --fingerprint HEX --name NAME --secret-file FILE
                      [--udp HOST:PORT] [--commands N] [--value V]
  reference_client.py --self-test     checks PROTOCOL.md's worked example

It prints one line per step on stdout, and exits 0 when every step worked, 1 with the reason
on stderr when one did not.
"""

import argparse
import hashlib
import hmac
import secrets
import socket
import ssl
import sys
import time


def auth_mac(secret: bytes, name: str, nonce: str) -> str:
    message = ("sited-auth-v1\n" + name + "\n" + nonce).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_datagram(secret: bytes, name: str, secs: int, nonce: str, payload: bytes) -> bytes:
    header = "sited-datagram-v1\n" + name + "\n" + str(secs) + "\n" + nonce + "\n"
    mac = hmac.new(secret, header.encode("utf-8") + payload, hashlib.sha256).hexdigest()
    return ("SIG1 %s %d %s %s\n" % (name, secs, nonce, mac)).encode("utf-8") + payload


def self_test() -> None:
    """PROTOCOL.md's worked example."""
    secret = bytes(range(32))
    nonce = bytes(range(0x20, 0x40)).hex()
    assert auth_mac(secret, "front", nonce) == (
        "0f50d7a281f69f0384235fc1134191977151e0f2809fe421f672ea16fa87cf4d"
    )
    datagram = sign_datagram(
        secret,
        "t1",
        1767225600,
        bytes(range(0x40, 0x50)).hex(),
        b"t1,2026-01-01 00:00:00,temperature,21.5,SEQ:1",
    )
    assert datagram == (
        b"SIG1 t1 1767225600 404142434445464748494a4b4c4d4e4f "
        b"1ac8d743b75edf3bb31123515dee7369d552b7d001c6d1ec335b2e761e1cf803\n"
        b"t1,2026-01-01 00:00:00,temperature,21.5,SEQ:1"
    ), datagram
    print("self-test: PROTOCOL.md's worked example checks out")


def host_port(text: str):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Lines:
    """Lines from a stream socket, each ending in \\n (PROTOCOL.md: Framing)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def read(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the hub closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8").rstrip("\r")


def connect_tls(address: str, fingerprint: str):
    """TLS 1.3 to the hub, accepting only the pinned certificate (PROTOCOL.md: TLS)."""
    pinned = fingerprint.replace(":", "").lower()
    if len(pinned) != 64:
        raise ValueError("a fingerprint is 64 hex characters")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # Trust comes from the pin below, not from a CA or the certificate's names. The handshake
    # still proves the hub holds the certificate's key.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(host_port(address), timeout=15)
    tls = context.wrap_socket(raw, server_hostname="sited-hub")
    der = tls.getpeercert(binary_form=True)
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, pinned):
        tls.close()
        raise ConnectionError(
            "the hub's certificate has fingerprint %s, not the pinned %s" % (got, pinned)
        )
    return tls


def authenticate(lines: Lines, name: str, secret: bytes) -> str:
    """CHAL, then AUTH (PROTOCOL.md: Authentication); the role the hub granted."""
    lines.send("CHAL")
    reply = lines.read()
    word, _, nonce = reply.partition(" ")
    if word != "CHAL" or len(nonce) != 64:
        raise ConnectionError("expected CHAL <nonce>, got %r" % reply)
    lines.send("AUTH %s %s" % (name, auth_mac(secret, name, nonce)))
    reply = lines.read()
    if not reply.startswith("OK AUTH "):
        raise PermissionError("the hub refused the key: %r" % reply)
    return reply[len("OK AUTH "):]


def signed_cycle(address: str, name: str, secret: bytes, value: float) -> str:
    """Ten signed seed-001 datagrams; the hub's STATUS reply."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(15)
    target = host_port(address)
    for seq in range(1, 11):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        payload = ("%s,%s,temperature,%.1f,SEQ:%d" % (name, stamp, value, seq)).encode()
        nonce = secrets.token_hex(16)
        udp.sendto(sign_datagram(secret, name, int(time.time()), nonce, payload), target)
    reply, _ = udp.recvfrom(1024)
    udp.close()
    return reply.decode("utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--tls")
    parser.add_argument("--fingerprint")
    parser.add_argument("--name")
    parser.add_argument("--secret-file")
    parser.add_argument("--udp")
    parser.add_argument("--commands", type=int, default=1)
    parser.add_argument("--value", type=float, default=21.5)
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return 0
    if not (args.tls and args.fingerprint and args.name and args.secret_file):
        parser.error("--tls, --fingerprint, --name and --secret-file are needed")
    with open(args.secret_file, encoding="ascii") as f:
        secret = bytes.fromhex(f.read().strip())
    try:
        tls = connect_tls(args.tls, args.fingerprint)
        print("connected over TLS 1.3, certificate pinned", flush=True)
        lines = Lines(tls)
        role = authenticate(lines, args.name, secret)
        print("authenticated as %s (%s)" % (args.name, role), flush=True)
        lines.send("DEVICE %s TYPE relay" % args.name)
        print("registered", flush=True)
        for _ in range(args.commands):
            command = lines.read()
            lines.send("ACK " + command)
            print("answered %s" % command, flush=True)
        if args.udp:
            print(signed_cycle(args.udp, args.name, secret, args.value), flush=True)
        tls.close()
    except (OSError, ValueError, PermissionError) as e:
        print("reference client: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Seed 001's TCP device (tcp_client.py), as the seed shows it: each message is one send()
without a newline, each command is one recv() with no strip(). The end-to-end tests run it
unchanged against sited's hub: python3 tcp_client.py HOST PORT [NAME]."""
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
NAME = sys.argv[3] if len(sys.argv) > 3 else "Sensor01"

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((HOST, PORT))
print(f"[{NAME}] Connected to Smart Hub at {HOST}:{PORT}", flush=True)
registration = f"DEVICE {NAME} TYPE temperature"
s.send(registration.encode())
print(f"[{NAME}] Sent registration: {registration}", flush=True)
while True:
    data = s.recv(1024)
    if not data:
        print(f"[{NAME}] Server closed connection.", flush=True)
        break
    command = data.decode()
    print(f"[{NAME}] Received command: {command}", flush=True)
    if command.startswith("SET_INTERVAL"):
        interval = command.split(" ")[1]
        print(f"[{NAME}] Changing reporting interval to {interval} seconds (simulated).", flush=True)
    elif command == "ACTIVATE_ALARM":
        print(f"[{NAME}] Alarm activated (simulated).", flush=True)
    else:
        print(f"[{NAME}] Unknown command: {command!r}", flush=True)
    s.send(b"ACK Command Executed")
    print(f"[{NAME}] Sent ACK.", flush=True)
print(f"[{NAME}] Closing connection.", flush=True)
s.close()

#!/usr/bin/env python3
"""Seed 001's UDP sensor (udp_client.py). The seed shows its flow and its output, not its
source, so this follows both exactly: ten datagrams "Sensor01,<timestamp>,temperature,<value>,
SEQ:<n>" sent one interval apart, then one recvfrom() for the STATUS with a 5 s timeout
("No status received (timeout)." if none), "Cycle complete. Starting a new cycle...", a sleep,
and the next cycle.

    python3 udp_client.py HOST PORT NAME INTERVAL CYCLES [LOSE]

INTERVAL is in seconds (fractions allowed). LOSE is a comma-separated list of CYCLE:SEQ pairs
(cycles count from 1) that the network "loses": the client prints them as sent but does not
send them, and carries on as usual. That is the only thing the seed's program does not do."""
import datetime
import random
import socket
import sys
import time

HOST, PORT, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3]
INTERVAL, CYCLES = float(sys.argv[4]), int(sys.argv[5])
LOSE = set()
if len(sys.argv) > 6:
    for pair in filter(None, sys.argv[6].split(",")):
        cycle, seq = pair.split(":")
        LOSE.add((int(cycle), int(seq)))

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(f"[{NAME}] UDP client sending to Smart Hub at {HOST}:{PORT}", flush=True)
for cycle in range(1, CYCLES + 1):
    for seq in range(1, 11):
        value = round(random.uniform(20.0, 30.0), 1)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        packet = f"{NAME},{stamp},temperature,{value},SEQ:{seq}"
        print(f"[{NAME}] Sending packet SEQ:{seq} - temperature={value}", flush=True)
        if (cycle, seq) not in LOSE:
            s.sendto(packet.encode(), (HOST, PORT))
        if seq < 10:
            time.sleep(INTERVAL)
    s.settimeout(5)
    try:
        data, _ = s.recvfrom(1024)
        print(f"[{NAME}] {data.decode()}", flush=True)
    except socket.timeout:
        print(f"[{NAME}] No status received (timeout).", flush=True)
    print(f"[{NAME}] Cycle complete. Starting a new cycle...", flush=True)
    print(flush=True)
    time.sleep(INTERVAL)
print(f"[{NAME}] Closing connection.", flush=True)
s.close()

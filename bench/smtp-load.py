#!/usr/bin/env python3
"""The benchmark's client: Python's smtplib, a client nobody here wrote and that costs little CPU
itself, so that on a small machine the servers, not the client, set the pace.

usage: smtp-load.py HOST PORT COUNT CONCURRENCY printer|session MESSAGE_FILE FROM
                    [--login USER PASSWORD] [--starttls CA_FILE] [--xoauth2 USER TOKEN]
Sends COUNT copies of the message from CONCURRENCY threads, printer-style (a new connection, EHLO
and AUTH for every message) or over one long session per thread. Prints one JSON line:
{"rate": messages per second, "p50": ms, "p99": ms}.
"""
import argparse
import base64
import json
import smtplib
import ssl
import threading
import time

arguments = argparse.ArgumentParser()
for name, kind in [('host', str), ('port', int), ('count', int), ('concurrency', int), ('style', str), ('message_file', str), ('sender', str)]:
    arguments.add_argument(name, type=kind)
arguments.add_argument('--login', nargs=2)
arguments.add_argument('--starttls')
arguments.add_argument('--xoauth2', nargs=2)
options = arguments.parse_args()
with open(options.message_file, 'rb') as f:
    message = f.read()
RECIPIENTS = ['alice@example.com']
tls = ssl.create_default_context(cafile=options.starttls) if options.starttls else None

lock = threading.Lock()
next_index = 0
latencies = []


def take():
    global next_index
    with lock:
        if next_index >= options.count:
            return False
        next_index += 1
        return True


def connect():
    client = smtplib.SMTP(options.host, options.port, timeout=60)
    client.ehlo('bench-device')
    if tls:
        client.starttls(context=tls)
        client.ehlo('bench-device')
    if options.login:
        client.login(*options.login)
    if options.xoauth2:
        user, token = options.xoauth2
        code, reply = client.docmd('AUTH', 'XOAUTH2 ' + base64.b64encode(f'user={user}\x01auth=Bearer {token}\x01\x01'.encode()).decode())
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)
    return client


def worker():
    session = connect() if options.style == 'session' else None
    while take():
        started = time.perf_counter()
        if session:
            session.sendmail(options.sender, RECIPIENTS, message)
        else:
            client = connect()
            client.sendmail(options.sender, RECIPIENTS, message)
            client.quit()
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)
    if session:
        session.quit()


started = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(options.concurrency)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
seconds = time.perf_counter() - started
latencies.sort()
pick = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
print(json.dumps({'rate': options.count / seconds, 'p50': pick(0.5), 'p99': pick(0.99)}))

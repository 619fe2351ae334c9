import { execFileSync } from 'node:child_process';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, message, metric, webhookReceiver, sendRaw, startProvider, startRelay, stopStarted, until } from './helpers.js';

/** A small tmpfs of our own: a real full disk (ENOSPC), not a simulated one. Needs mount rights (root). */
function mountSmallDisk(dir: string, size: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `cannot mount a tmpfs here (${(error as Error).message.split('\n')[0]})`;
  }
}

const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'relay-full-disk-'));
const cannotMount = mountSmallDisk(mountPoint, '3m');
if (cannotMount) console.warn(`full-disk tests skipped: ${cannotMount}`);

describe.skipIf(cannotMount !== undefined)('a full disk', () => {
  afterAll(async () => {
    await stopStarted();
    execFileSync('umount', [mountPoint]);
    await rm(mountPoint, { recursive: true, force: true });
  });

  it('answers 4xx (never 5xx) when the disk fills, keeps what it accepted, and delivers it all once there is room', async () => {
    const provider = await startProvider();
    provider.refuseConnections = true;
    const hook = await webhookReceiver();
    const dataDir = path.join(mountPoint, 'data');
    const relay = await startRelay(provider, {
      dataDir,
      top: { delivery: 'queue', queue: { minFreeDisk: 1, retry: { initialDelay: 0.2, maxDelay: 0.4, maxAge: 3600 } }, oauth: { retries: 0, retryDelay: 0.05 }, notify: { webhook: hook.url, checkInterval: 0.2 } },
    });
    const scan = (n: number) => ({ from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: full ${n}`], 'x'.repeat(400_000)) });
    const accepted: number[] = [];
    let refusal = '';
    for (let n = 0; n < 20 && !refusal; n++) {
      await sendRaw(relay.port, scan(n)).then(
        () => accepted.push(n),
        (error: { response?: string }) => (refusal = error.response ?? String(error)),
      );
    }
    expect(refusal).toMatch(/^4\d\d /);
    expect(accepted.length).toBeGreaterThan(0);
    expect(await readdir(path.join(dataDir, 'spool', 'incoming'))).toEqual([]);
    const queued = (await readdir(path.join(dataDir, 'spool', 'queue'))).filter((name) => !name.startsWith('.'));
    // Whole queue files only, one per accepted message, and the state of the failed attempts.
    expect(queued.filter((name) => !/\.(msg|state)$/.test(name))).toEqual([]);
    expect(queued.filter((name) => name.endsWith('.msg'))).toHaveLength(accepted.length);

    // Fill what is left, so that saving a delivery result fails too: the messages stay scheduled.
    const filler = path.join(mountPoint, 'filler');
    await (async () => {
      for (;;) await appendFile(filler, Buffer.alloc(4096));
    })().catch(() => undefined);
    await until(() => relay.logs.some((line) => line.includes('cannot write the delivery result')));
    // The delivery log is a log: its events are dropped (and counted), the mail is not.
    await until(async () => (await metric(relay.httpPort, 'smtp_relay_trace_events_dropped_total')) > 0);
    await until(() => hook.received.some((notification) => notification.key === 'delivery-log' && notification.status === 'firing'));
    await hook.close();
    await rm(filler);
    provider.refuseConnections = false;
    await until(() => provider.received.length === accepted.length, 20_000);
    const subjects = provider.received.map((received) => /Subject: full (\d+)/.exec(received.raw.toString())![1]).map(Number).sort((a, b) => a - b);
    expect(subjects).toEqual(accepted);
    // With room again, the log records the outcome of every message.
    const delivered = async () => (JSON.parse((await cli(['trace', '--data-dir', dataDir, '--status', 'delivered', '--json'])).stdout) as { messages: unknown[] }).messages.length;
    await until(async () => (await delivered()) === accepted.length);
    expect(relay.logs.join('\n')).not.toMatch(/"reply":"5\d\d/);
  });
});

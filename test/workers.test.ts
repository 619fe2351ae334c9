import { readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import nodemailer from 'nodemailer';
import { ADMIN_AUTHORIZATION, DEVICE, MAILBOX, accountFor, adminHttp, cli, consolePost, freePort, message, promtool, sendRaw, startProvider, stopStarted, until, writeRelayConfig } from './helpers.js';
import { RelayProcess } from '../bench/relay-process.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { Spool, newQueueRecord } from '../src/spool/index.js';
import { cpusOfQuota } from '../src/workers/index.js';

/** The live processes whose parent is `pid` (read from /proc: no ps needed; a killed one not reaped yet is left out). */
async function childPids(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(ppid) === pid && state !== 'Z') children.push(Number(name));
  }
  return children;
}

const relays: RelayProcess[] = [];
async function startRelayProcess(provider: FakeProvider, extra: Record<string, unknown>): Promise<{ relay: RelayProcess; configFile: string; dataDir: string }> {
  const { configFile, dataDir } = await writeRelayConfig(provider, extra);
  const relay = new RelayProcess(configFile);
  relays.push(relay);
  await relay.start();
  return { relay, configFile, dataDir };
}

async function scrape(relay: RelayProcess): Promise<string> {
  return (await fetch(`http://127.0.0.1:${relay.httpPort}/metrics`)).text();
}

async function metricFromProcess(relay: RelayProcess, line: RegExp): Promise<number> {
  return sample(await scrape(relay), line);
}

function sample(text: string, line: RegExp): number {
  const match = text.split('\n').find((entry) => line.test(entry));
  return match ? Number(match.split(' ').pop()) : NaN;
}

const mail = (n: number, tag = 'workers') => ({ from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: ${tag} ${n}`], `message ${n}`) });

/** A device that retries what got no 250, as a scanner does (for `giveUpMs` at most); resolves with the attempts it took. */
async function sendUntilAccepted(port: () => number, n: number, tag: string, waitFor?: () => Promise<void> | undefined, giveUpMs = 60_000): Promise<number> {
  const giveUpAt = Date.now() + giveUpMs;
  for (let attempt = 1; ; attempt++) {
    if (Date.now() > giveUpAt) throw new Error(`message ${n} got no 250 in ${giveUpMs / 1000} s of retries`);
    await waitFor?.();
    try {
      await sendRaw(port(), mail(n, tag));
      return attempt;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** The relay's queue id of a delivered message (its Received field). */
const queueId = (raw: Buffer) => /\(smtp-oauth-relay\) with \S+ id ([0-9A-Z]+);/.exec(raw.toString())![1];

afterEach(async () => {
  for (const relay of relays.splice(0)) if (relay.child?.exitCode === null && relay.child.signalCode === null) await relay.stop('SIGKILL');
  await stopStarted();
});

describe('smtp.workers: devices on several event loops, one owner per piece of state', () => {
  it('says what smtp.workers takes, naming the key', async () => {
    const provider = await startProvider();
    for (const [workers, expected] of [[0, /smtp\.workers: must be auto \(one process per CPU\) or a number of processes from 1 to 64/], ['all', /smtp\.workers: must be auto/], [3, /3 worker processes \+ primary/], ['auto', /(one process \(auto: 1 CPU\)|\d+ worker processes \(auto: one per CPU\) \+ primary)/]] as const) {
      const { configFile } = await writeRelayConfig(provider, { smtp: { workers } });
      const result = await cli(['check', '--config', configFile]);
      expect(result.stdout + result.stderr).toMatch(expected);
    }
  });

  it('auto counts a container\'s CPU limit as cgroups state it', () => {
    expect(cpusOfQuota('150000 100000')).toBe(1); // cgroup v2 cpu.max, --cpus=1.5
    expect(cpusOfQuota('200000 100000')).toBe(2);
    expect(cpusOfQuota('50000 100000')).toBe(1); // half a CPU is still one worker
    expect(cpusOfQuota('max 100000')).toBeUndefined(); // v2: no limit
    expect(cpusOfQuota('-1 100000')).toBeUndefined(); // v1 quota and period: no limit
    expect(cpusOfQuota(' ')).toBeUndefined(); // no cgroup files
  });

  it('reports a port in use once, as one process does, and exits', async () => {
    const provider = await startProvider();
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const { configFile } = await writeRelayConfig(provider, { smtp: { workers: 2, port: (blocker.address() as net.AddressInfo).port } });
      const result = await cli(['serve', '--config', configFile]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^Cannot listen: bind EADDRINUSE .* Choose another port \(smtp\.port/)]);
    } finally {
      blocker.close();
    }
  }, 30_000);

  it('takes sessions in worker processes, delivers every message once, asks for one token, and sums /metrics', async () => {
    const provider = await startProvider();
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 3 } });
    expect(await childPids(relay.child!.pid!)).toHaveLength(3);
    let next = 0;
    await Promise.all(Array.from({ length: 6 }, async () => {
      while (next < 60) await sendRaw(relay.port, mail(next++));
    }));
    await until(() => provider.received.length >= 60);
    const subjects = provider.received.map((received) => /Subject: workers (\d+)/.exec(received.raw.toString())![1]);
    expect(new Set(subjects).size).toBe(60);
    expect(provider.received).toHaveLength(60);
    expect(provider.tokenRequests).toBe(1);
    const metrics = await scrape(relay);
    expect(sample(metrics, /^smtp_relay_messages_received_total\{account="office"\}/)).toBe(60);
    expect(sample(metrics, /^smtp_relay_smtp_connections_total /)).toBe(60);
    expect(await promtool(['check', 'metrics'], metrics)).toEqual({ code: 0, output: '' }); // the sum is still good exposition
    expect(await relay.stop('SIGTERM')).toBe(0);
  }, 60_000);

  it('direct mode: every worker sends with the primary\'s token and session slots (never more than maxConnections upstream)', async () => {
    const provider = await startProvider();
    provider.dataDelayMs = 20;
    const office = accountFor(provider);
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 3 }, delivery: 'direct', accounts: { office: { ...office, upstream: { ...(office.upstream as object), maxConnections: 2 } } } });
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 40) await sendRaw(relay.port, mail(next++, 'direct'));
    }));
    expect(provider.received).toHaveLength(40);
    expect(provider.peakSessions.get('scanner@contoso.test')).toBeLessThanOrEqual(2);
    expect(provider.tokenRequests).toBe(1);
  }, 60_000);

  it('locks a device out after failures spread over the workers, and lifts it everywhere', async () => {
    const provider = await startProvider();
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 3, authFailures: { maxPerUser: 4, maxPerIp: 100 } }, http: await adminHttp() });
    const login = async (password: string) => {
      const device = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true, auth: { user: DEVICE.username, pass: password } });
      try {
        await device.verify();
        return 'ok';
      } catch (error) {
        return (error as { response?: string }).response ?? (error as Error).message;
      } finally {
        device.close();
      }
    };
    for (let i = 0; i < 4; i++) expect(await login('wrong password')).toMatch(/^535/);
    // The right password now fails on every worker (connections are dealt to them in turn).
    for (let i = 0; i < 6; i++) expect(await login(DEVICE.password)).toMatch(/locked|try again later/i);
    // The console (the primary) sees the lockout, and lifting it there lifts it in every worker.
    const devices = await (await fetch(`http://127.0.0.1:${relay.httpPort}/devices`, { headers: { authorization: ADMIN_AUTHORIZATION } })).text();
    expect(devices).toContain(DEVICE.username);
    expect(await consolePost(relay.httpPort, '/devices/unlock', { scope: 'user', key: DEVICE.username })).toContain(`${DEVICE.username} unlocked.`);
    for (let i = 0; i < 6; i++) expect(await login(DEVICE.password)).toBe('ok');
  }, 60_000);

  it('keeps queue.maxSize across workers when a device sends as fast as it can', async () => {
    const provider = await startProvider();
    const office = accountFor(provider);
    // Nothing drains: the upstream does not answer, so every message stays queued.
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 2 }, queue: { maxSize: '100KB' }, accounts: { office: { ...office, upstream: { ...(office.upstream as object), port: await freePort() } } } });
    const body = 'x'.repeat(10 * 1024);
    let accepted = 0;
    let refusal = '';
    while (!refusal && accepted < 50) {
      await sendRaw(relay.port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: fill ${accepted}`], body) }).then(
        () => accepted++,
        (error: { response?: string }) => (refusal = error.response ?? String(error)),
      );
    }
    expect(refusal).toMatch(/^452 4\.3\.1/);
    expect(accepted).toBeGreaterThanOrEqual(5);
    // 100 KB holds 9 of these (~10.6 KB each); the other worker may not have heard of the latest
    // commit when the device's next session reaches it: one message over at most.
    expect(accepted).toBeLessThanOrEqual(10);
  }, 60_000);

  it('a config change on SIGHUP reaches every worker', async () => {
    const provider = await startProvider();
    const { relay, configFile } = await startRelayProcess(provider, { smtp: { workers: 2 } });
    const config = parse(await readFile(configFile, 'utf8')) as { users: { password: string }[] };
    config.users[0].password = 'a new password for the printer';
    await writeFile(configFile, stringify(config));
    relay.child!.kill('SIGHUP');
    const newDevice = { username: DEVICE.username, password: 'a new password for the printer' };
    await until(async () => {
      for (let i = 0; i < 4; i++) {
        const ok = await sendRaw(relay.port, mail(i, 'reload'), newDevice).then(() => true, () => false);
        if (!ok) return false;
      }
      return true;
    });
    await expect(sendRaw(relay.port, mail(9, 'reload'))).rejects.toThrow(/535/);
  }, 60_000);
});

describe('a message that got 250 survives SIGKILL of a worker and of the primary', () => {
  it('delivers what a worker committed but could not tell the primary before it died', async () => {
    const provider = await startProvider();
    const { relay, dataDir } = await startRelayProcess(provider, { smtp: { workers: 2 } });
    // A commit as a worker makes it, written beside the running relay: the primary has not heard of it.
    const content = Buffer.from(message(['From: mfp@printers.local', 'Subject: committed before the worker died'], 'scan'));
    const record = newQueueRecord({ id: 'ORPHANED0COMMIT', account: 'office', envelope: { from: MAILBOX, to: ['alice@example.com'] }, size: content.length, user: DEVICE.username, clientIp: '127.0.0.1' });
    await new Spool(dataDir).enqueue(record, content);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(provider.received).toHaveLength(0);
    const [worker] = await childPids(relay.child!.pid!);
    process.kill(worker, 'SIGKILL');
    await until(() => provider.received.length === 1);
    expect(provider.received[0].raw.toString()).toContain('Subject: committed before the worker died');
  }, 60_000);

  it('a replacement serves on the same socket: with both first workers killed, mail still flows', async () => {
    const provider = await startProvider();
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 2 } });
    const listening = async () => ((await (await fetch(`http://127.0.0.1:${relay.httpPort}/readyz`)).json()) as { workers: { configured: number; listening: number } }).workers;
    expect(await listening()).toEqual({ configured: 2, listening: 2 });
    // One at a time, each killed once its replacement takes sessions: the socket must pass to the new ones.
    for (const worker of await childPids(relay.child!.pid!)) {
      process.kill(worker, 'SIGKILL');
      await until(async () => (await listening()).listening === 1);
      await until(async () => (await listening()).listening === 2);
    }
    for (let n = 0; n < 6; n++) await sendUntilAccepted(() => relay.port, n, 'replaced', undefined, 15_000);
    await until(() => provider.received.length === 6);
  }, 90_000);

  it('delivers every accepted message across worker kills, none twice', async () => {
    const MESSAGES = 600;
    const provider = await startProvider();
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 2 }, queue: { retry: { initialDelay: 0.2, maxDelay: 1 } } });
    const accepted = new Set<number>();
    const resent = new Set<number>();
    const killAt = [50, 150, 250, 350];
    let kills = 0;
    let killing: Promise<void> | undefined;
    /** One kill at a time, each of a worker that is running (the one killed before it was replaced). */
    const killWorker = async () => {
      await until(async () => (await childPids(relay.child!.pid!)).length === 2);
      const [worker] = await childPids(relay.child!.pid!);
      process.kill(worker, 'SIGKILL');
      kills++;
    };
    let next = 0;
    const client = async () => {
      // Mail keeps coming until every kill has landed mid-burst.
      while (next < MESSAGES || killAt.length || killing) {
        const n = next++;
        if ((await sendUntilAccepted(() => relay.port, n, 'worker-kill')) > 1) resent.add(n);
        accepted.add(n);
        if (killAt.length && accepted.size >= killAt[0] && !killing) {
          killAt.shift();
          killing = killWorker().finally(() => (killing = undefined));
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, client));
    await killing;
    const deliveredIds = () => provider.received.map((received) => Number(/Subject: worker-kill (\d+)/.exec(received.raw.toString())![1]));
    await until(() => new Set(deliveredIds()).size >= accepted.size, 60_000).catch(() => undefined);
    const delivered = deliveredIds();
    const lost = [...accepted].filter((n) => !delivered.includes(n));
    console.log(`workers kill test (workers only): ${accepted.size} accepted, ${new Set(delivered).size} delivered, ${lost.length} lost, ${delivered.length - new Set(delivered).size} duplicates, ${kills} kills`);
    expect(kills).toBe(4);
    expect(lost).toEqual([]);
    // No message the relay took was sent twice; a device sends again what got no 250 (the worker
    // died between the commit and the reply): that copy is a message of its own, as with any MTA.
    const ids = provider.received.map((received) => queueId(received.raw));
    expect(ids).toHaveLength(new Set(ids).size);
    const twice = delivered.filter((n, index) => delivered.indexOf(n) !== index);
    expect(twice.filter((n) => !resent.has(n))).toEqual([]);
    expect(await metricFromProcess(relay, /^smtp_relay_worker_restarts_total /)).toBe(4);
    await until(async () => (await childPids(relay.child!.pid!)).length === 2); // the last one killed is replaced
  }, 180_000);

  it('delivers every accepted message across worker and primary kills', async () => {
    const MESSAGES = 600;
    const provider = await startProvider();
    provider.dataDelayMs = 5;
    const { relay } = await startRelayProcess(provider, { smtp: { workers: 2 }, queue: { retry: { initialDelay: 0.2, maxDelay: 1 } } });
    const accepted = new Set<number>();
    const kills = [
      { at: 120, target: 'worker' },
      { at: 300, target: 'primary' },
      { at: 450, target: 'worker' },
    ];
    const killed: string[] = [];
    let restarting: Promise<void> | undefined;
    let next = 0;
    const client = async () => {
      while (next < MESSAGES) {
        const n = next++;
        await sendUntilAccepted(() => relay.port, n, 'kill', () => restarting);
        accepted.add(n);
        if (kills.length && accepted.size >= kills[0].at && !restarting) {
          const { target } = kills.shift()!;
          killed.push(target);
          restarting =
            target === 'primary'
              ? relay.stop('SIGKILL').then(() => relay.start())
              : childPids(relay.child!.pid!).then(([worker]) => void process.kill(worker, 'SIGKILL'));
          restarting = restarting.finally(() => (restarting = undefined));
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, client));
    await restarting;
    const deliveredIds = () => provider.received.map((received) => Number(/Subject: kill (\d+)/.exec(received.raw.toString())![1]));
    await until(() => [...accepted].every((n) => deliveredIds().includes(n)), 60_000).catch(() => undefined);
    const delivered = deliveredIds();
    const lost = [...accepted].filter((n) => !delivered.includes(n));
    const duplicates = delivered.length - new Set(delivered).size;
    console.log(`workers kill test: ${accepted.size} accepted, ${new Set(delivered).size} delivered, ${lost.length} lost, ${duplicates} duplicates, kills: ${killed.join(', ')}`);
    expect(killed).toEqual(['worker', 'primary', 'worker']);
    expect(lost).toEqual([]);
    expect(await relay.stop('SIGTERM')).toBe(0);
  }, 180_000);
});

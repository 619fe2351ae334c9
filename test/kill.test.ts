import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { DEVICE, accountFor, message, sendRaw, startProvider } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';

const CLI = path.resolve('dist/src/cli/main.js');
const MESSAGES = 1000;
const CLIENTS = 8;
const KILLS = 3;

/** The relay as a real process, restartable; resolves once it listens. */
class RelayProcess {
  child?: ChildProcess;
  port = 0;

  constructor(private readonly configFile: string) {}

  start(): Promise<void> {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`relay exited early (${code})`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg?: string; smtp?: string };
        if (entry.msg === 'smtp-oauth-relay listening') {
          this.port = Number(entry.smtp!.split(':').pop());
          resolve();
        }
      });
    });
  }

  stop(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child!;
    child.removeAllListeners('exit');
    return new Promise((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.kill(signal);
    });
  }
}

describe('a message that got 250 survives SIGKILL', () => {
  let provider: FakeProvider;
  let relay: RelayProcess;

  afterAll(async () => {
    if (relay?.child?.exitCode === null) await relay.stop('SIGKILL');
    await provider?.stop();
  });

  it(`delivers all of ${MESSAGES} messages from ${CLIENTS} clients across ${KILLS} kills, and stops cleanly on SIGTERM`, async () => {
    provider = await startProvider();
    provider.dataDelayMs = 5; // a slow upstream keeps messages in the spool when the kills land
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'relay-kill-'));
    const configFile = path.join(dataDir, 'config.yaml');
    await writeFile(
      configFile,
      stringify({
        delivery: 'queue',
        smtp: { host: '127.0.0.1', port: 0, maxClients: 200 },
        http: { host: '127.0.0.1', port: 0 },
        dataDir,
        log: { level: 'info' },
        queue: { retry: { initialDelay: 0.2, maxDelay: 1 } },
        accounts: { office: accountFor(provider) },
        users: [{ ...DEVICE, account: 'office' }],
      }),
      { mode: 0o600 },
    );
    relay = new RelayProcess(configFile);
    await relay.start();

    const accepted = new Set<number>();
    const killAt = Array.from({ length: KILLS }, () => Math.floor(MESSAGES * (0.1 + 0.8 * Math.random()))).sort((a, b) => a - b);
    let restarting: Promise<void> | undefined;
    let next = 0;
    const client = async () => {
      while (next < MESSAGES) {
        const n = next++;
        const mail = { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['From: mfp@printers.local', `Subject: kill-test ${n}`], `message ${n}`) };
        for (;;) {
          await restarting;
          try {
            await sendRaw(relay.port, mail);
            accepted.add(n);
            break;
          } catch {
            await new Promise((resolve) => setTimeout(resolve, 20)); // a device retries what got no 250
          }
        }
        if (killAt.length && accepted.size >= killAt[0] && !restarting) {
          killAt.shift();
          restarting = relay.stop('SIGKILL').then(() => relay.start()).finally(() => (restarting = undefined));
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    await restarting;
    expect(accepted.size).toBe(MESSAGES);

    const deadline = Date.now() + 60_000;
    const deliveredIds = () => provider.received.map((m) => Number(/Subject: kill-test (\d+)/.exec(m.raw.toString())![1]));
    while (new Set(deliveredIds()).size < MESSAGES && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    const delivered = deliveredIds();
    const lost = [...accepted].filter((n) => !delivered.includes(n));
    const duplicates = delivered.length - new Set(delivered).size;
    console.log(`kill test: ${accepted.size} accepted, ${new Set(delivered).size} delivered, ${lost.length} lost, ${duplicates} duplicates, ${KILLS} kills`);
    expect(lost).toEqual([]);
    expect(killAt).toEqual([]); // every planned kill happened

    expect(await relay.stop('SIGTERM')).toBe(0);
  }, 180_000);
});

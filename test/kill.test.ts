import { afterAll, describe, expect, it } from 'vitest';
import { message, sendRaw, startProvider, writeRelayConfig } from './helpers.js';
import type { FakeProvider } from '../src/demo/fake-provider.js';
import { RelayProcess } from '../bench/relay-process.js';

const MESSAGES = 1000;
const CLIENTS = 8;
const KILLS = 3;

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
    const { configFile } = await writeRelayConfig(provider, { queue: { retry: { initialDelay: 0.2, maxDelay: 1 } } });
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

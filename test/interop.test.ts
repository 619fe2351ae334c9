import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, startProvider, startRelay, until, type TestRelay } from './helpers.js';
import { FAKE_TLS, type FakeProvider, type ReceivedMessage } from '../src/demo/fake-provider.js';
import { downstreamView } from './header-shapes.js';
import { sClient } from './openssl-client.js';
import { PrivatePostfix } from '../bench/private-postfix.js';

/*
 * Real clients nobody here wrote, as devices and servers use them: msmtp, curl, swaks, Python
 * smtplib, openssl s_client and Postfix as a smarthost client. Each sends a plain message and one
 * with an attachment, over plain text, STARTTLS and implicit TLS where the client can; the test
 * checks the delivered bytes: one From (the mailbox), Reply-To, Received, the attachment's checksum
 * and UTF-8 headers intact. (.ci/run installs the clients.)
 */

const run = promisify(execFile);
const ATTACHMENT = randomBytes(150_000);
const CHECKSUM = createHash('sha256').update(ATTACHMENT).digest('hex');
const SUBJECT = 'Scan vom Drucker – Größe ✓';
type Transport = 'plain' | 'starttls' | 'implicit';

/** A MIME message with a binary attachment (what a scanner sends), CRLF line endings. */
function scanMessage(client: string, transport: Transport, withAttachment: boolean): string {
  const head = [`From: Scanner 2F <scanner-2f@printers.local>`, `To: alice@example.com`, `Subject: ${SUBJECT} [${client} ${transport}${withAttachment ? ' attachment' : ''}]`, 'MIME-Version: 1.0'];
  if (!withAttachment) return [...head, 'Content-Type: text/plain; charset=utf-8', '', 'Scanned page attached.', ''].join('\r\n');
  const boundary = 'scan-boundary-42';
  const base64 = ATTACHMENT.toString('base64').replace(/.{76}/g, '$&\r\n');
  return [
    ...head,
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Scanned page attached.',
    `--${boundary}`,
    'Content-Type: application/pdf; name="scan.pdf"',
    'Content-Disposition: attachment; filename="scan.pdf"',
    'Content-Transfer-Encoding: base64',
    '',
    base64,
    `--${boundary}--`,
    '',
  ].join('\r\n');
}

/** The decoded bytes of the base64 attachment named scan.pdf, if any. */
function attachmentOf(raw: Buffer): Buffer | undefined {
  const text = raw.toString('latin1');
  const at = text.search(/filename="?scan\.pdf/);
  if (at < 0) return undefined;
  const start = text.indexOf('\r\n\r\n', at) + 4;
  const end = text.indexOf('\r\n--', start);
  return Buffer.from(text.slice(start, end).replace(/\s+/g, ''), 'base64');
}

/** @param hops Received fields expected: the relay's on top, and one from a mail server in front of it. */
function checkDelivered(received: ReceivedMessage, withAttachment: boolean, hops = 1): void {
  const view = downstreamView(received.raw);
  const values = (name: string) => view.fields.filter((field) => field.name === name).map((field) => field.value.trim());
  expect(values('from')).toEqual([`Scanner 2F <${MAILBOX}>`]);
  expect(values('reply-to')).toEqual(['Scanner 2F <scanner-2f@printers.local>']);
  expect(values('received')).toHaveLength(hops);
  expect(values('received')[0]).toContain(`(Authenticated sender: ${DEVICE.username})`);
  expect(received.raw.toString('utf8')).toContain(`Subject: ${SUBJECT} [`);
  if (withAttachment) expect(createHash('sha256').update(attachmentOf(received.raw) ?? '').digest('hex')).toBe(CHECKSUM);
}

describe('real clients', () => {
  let provider: FakeProvider;
  let relay: TestRelay;
  let dir: string;
  let implicitPort: number;

  beforeAll(async () => {
    provider = await startProvider();
    relay = await startRelay(provider, {
      top: { delivery: 'queue', smtp: { host: '127.0.0.1', port: 0, hostname: 'relay.test', maxConnectionsPerIp: 500, tls: { cert: FAKE_TLS.cert(), key: FAKE_TLS.key(), implicitPort: 0 } } },
    });
    implicitPort = relay.app.smtpsPort!;
    dir = await mkdtemp(path.join(os.tmpdir(), 'relay-interop-'));
  });
  afterAll(async () => {
    await relay?.stop();
    await provider?.stop();
  });

  /** Sends with one client and returns what reached the upstream. */
  async function delivered(client: string, transport: Transport, withAttachment: boolean, send: (file: string) => Promise<unknown>): Promise<ReceivedMessage> {
    const file = path.join(dir, `${client}-${transport}-${withAttachment}.eml`);
    await writeFile(file, scanMessage(client, transport, withAttachment));
    const tag = `[${client} ${transport}${withAttachment ? ' attachment' : ''}]`;
    await send(file);
    await until(() => provider.received.some((received) => received.raw.toString('utf8').includes(tag)), 20_000);
    return provider.received.find((received) => received.raw.toString('utf8').includes(tag))!;
  }

  const cases: [Transport, boolean][] = [
    ['plain', false],
    ['plain', true],
    ['starttls', true],
    ['implicit', true],
  ];

  for (const [transport, withAttachment] of cases) {
    it(`msmtp over ${transport}${withAttachment ? ' with an attachment' : ''}`, async () => {
      // Without TLS, msmtp uses only challenge-response methods unless told PLAIN is meant, as a device would be.
      const tls = transport === 'plain' ? ['--tls=off', '--auth=plain'] : ['--auth=on', '--tls=on', `--tls-trust-file=${FAKE_TLS.ca()}`, '--tls-host-override=localhost', `--tls-starttls=${transport === 'starttls' ? 'on' : 'off'}`];
      const port = transport === 'implicit' ? implicitPort : relay.port;
      const received = await delivered('msmtp', transport, withAttachment, (file) =>
        pipeInto('msmtp', ['--host=127.0.0.1', `--port=${port}`, `--user=${DEVICE.username}`, '--passwordeval=echo "$RELAY_PASSWORD"', '--from=scanner-2f@printers.local', ...tls, 'alice@example.com'], file),
      );
      checkDelivered(received, withAttachment);
    });

    it(`curl over ${transport}${withAttachment ? ' with an attachment' : ''}`, async () => {
      const url = transport === 'implicit' ? `smtps://localhost:${implicitPort}` : `smtp://localhost:${relay.port}`;
      const tls = transport === 'starttls' ? ['--ssl-reqd'] : [];
      const received = await delivered('curl', transport, withAttachment, (file) =>
        run('curl', ['-sS', '--resolve', `localhost:${transport === 'implicit' ? implicitPort : relay.port}:127.0.0.1`, url, ...tls, '--cacert', FAKE_TLS.ca(), '--user', `${DEVICE.username}:${DEVICE.password}`, '--mail-from', 'scanner-2f@printers.local', '--mail-rcpt', 'alice@example.com', '-T', file]),
      );
      checkDelivered(received, withAttachment);
    });

    it(`swaks over ${transport}${withAttachment ? ' with an attachment' : ''}`, async () => {
      const tls = transport === 'starttls' ? ['--tls'] : transport === 'implicit' ? ['--tls-on-connect'] : [];
      const port = transport === 'implicit' ? implicitPort : relay.port;
      const received = await delivered('swaks', transport, withAttachment, (file) =>
        run('swaks', ['--server', `127.0.0.1:${port}`, ...tls, '--auth', 'LOGIN', '--auth-user', DEVICE.username, '--auth-password', DEVICE.password, '--from', 'scanner-2f@printers.local', '--to', 'alice@example.com', '--data', file]),
      );
      checkDelivered(received, withAttachment);
    });

    it(`Python smtplib over ${transport}${withAttachment ? ' with an attachment' : ''}`, async () => {
      const script = [
        'import smtplib, ssl, sys',
        'mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]',
        'context = ssl.create_default_context(cafile=sys.argv[4])',
        's = smtplib.SMTP_SSL("localhost", port, context=context, timeout=20) if mode == "implicit" else smtplib.SMTP("localhost", port, timeout=20)',
        'if mode == "starttls": s.starttls(context=context)',
        `s.login("${DEVICE.username}", "${DEVICE.password}")`,
        's.sendmail("scanner-2f@printers.local", ["alice@example.com"], open(path, "rb").read())',
        's.quit()',
      ].join('\n');
      const port = transport === 'implicit' ? implicitPort : relay.port;
      const received = await delivered('smtplib', transport, withAttachment, (file) => run('python3', ['-c', script, transport, String(port), file, FAKE_TLS.ca()]));
      checkDelivered(received, withAttachment);
    });
  }

  for (const transport of ['starttls', 'implicit'] as const) {
    it(`openssl s_client, by hand, over ${transport}`, async () => {
      const received = await delivered('openssl', transport, true, async (file) => {
        const data = (await import('node:fs/promises')).readFile(file, 'utf8');
        const commands = ['EHLO openssl.test', `AUTH PLAIN ${Buffer.from(`\0${DEVICE.username}\0${DEVICE.password}`).toString('base64')}`, 'MAIL FROM:<scanner-2f@printers.local>', 'RCPT TO:<alice@example.com>', 'DATA', `${(await data).replace(/\r\n$/, '').replace(/\r\n/g, '\n')}\n.`, 'QUIT']; // -crlf makes each LF a CRLF
        const target = transport === 'implicit' ? ['-connect', `127.0.0.1:${implicitPort}`] : ['-starttls', 'smtp', '-connect', `127.0.0.1:${relay.port}`];
        // -nocommands: a base64 line starting with R or Q must not renegotiate or quit.
        await sClientSession([...target, '-crlf', '-quiet', '-nocommands', '-CAfile', FAKE_TLS.ca()], commands);
      });
      checkDelivered(received, true);
    });
  }

  for (const smtputf8 of ['yes', 'no'] as const) {
    for (const transport of ['plain', 'starttls'] as const) {
      it(`Postfix as a smarthost client, smtputf8_enable = ${smtputf8}, ${transport}`, async () => {
        const postfix = await PrivatePostfix.start(path.join(dir, `postfix-${smtputf8}-${transport}`), { relayPort: relay.port, auth: DEVICE, smtputf8, tlsCaFile: transport === 'starttls' ? FAKE_TLS.ca() : undefined });
        try {
          const received = await delivered(`postfix-${smtputf8}`, transport, true, (file) => postfix.send(file, 'scanner-2f@printers.local', 'alice@example.com'));
          checkDelivered(received, true, 2);
          if (transport === 'starttls') expect(downstreamView(received.raw).fields.find((field) => field.name === 'received')!.value).toMatch(/with ESMTPSA/);
        } finally {
          await postfix.stop();
        }
      }, 60_000);
    }
  }
});

/** Runs a client with a file on its standard input. */
function pipeInto(command: string, args: string[], file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, RELAY_PASSWORD: DEVICE.password }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited ${code}: ${stderr}`))));
    import('node:fs').then(({ createReadStream }) => createReadStream(file).pipe(child.stdin));
  });
}

/** An SMTP session typed into openssl s_client, one command at a time; it must end in a 250 queued. */
async function sClientSession(args: string[], commands: string[]): Promise<string> {
  const output = await sClient(args, commands, 300);
  if (!/^250 .*queued as/m.test(output)) throw new Error(`openssl session failed:\n${output}`);
  return output;
}


import { afterEach, describe, expect, it } from 'vitest';
import { DEVICE, MAILBOX, execFileAsync, headerValues, message, metric, sendRaw, splitMessage, startProvider, startRelay, type RelayOptions, type TestRelay, stopStarted } from './helpers.js';
import { RawSmtp } from './raw-smtp.js';
import { FAKE_TLS, type FakeProvider } from '../src/demo/fake-provider.js';

// The published SMTP smuggling end-of-data variants (SEC Consult, 2023) and friends.
const FAKE_TERMINATORS = ['\n.\n', '\n.\r\n', '\r.\r', '\r\n.\r', '\r.\r\n', '\r\n\x00.\r\n', '\r\n.\n', '\n\x00.\r\n'];
const SMUGGLED = 'MAIL FROM:<ceo@contoso.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nFrom: ceo@contoso.test\r\nSubject: smuggled\r\n\r\nwire the money\r\n';

async function session(port: number, options: { host?: string; implicitTls?: boolean } = {}) {
  const { client, greeting } = await RawSmtp.connect(port, options);
  expect(greeting).toMatch(/^220 /);
  expect(await client.command('EHLO device.local')).toMatch(/^250/m);
  return client;
}

describe('the front door', () => {
  let provider: FakeProvider;
  let relay: TestRelay | undefined;

  afterEach(async () => {
    RawSmtp.closeAll();
    await stopStarted();
  });

  async function setUp(options: RelayOptions = {}, smtp: Record<string, unknown> = {}) {
    provider = await startProvider();
    relay = await startRelay(provider, { ...options, top: { smtp: { host: '127.0.0.1', port: 0, maxConnectionsPerIp: 500, ...smtp }, ...options.top } });
    return relay;
  }

  it('limits sessions waiting to log in per address, and ends one that does not log in within smtp.authTimeout', async () => {
    const { port } = await setUp({}, { maxUnauthenticatedPerIp: 3, authTimeout: 1 });
    const idle = [];
    for (let n = 0; n < 3; n++) idle.push((await RawSmtp.connect(port, { localAddress: '127.0.0.2' })).greeting);
    expect(idle.every((greeting) => greeting.startsWith('220 '))).toBe(true);
    expect((await RawSmtp.connect(port, { localAddress: '127.0.0.2' })).greeting).toMatch(/^421 4\.7\.0 Too many sessions waiting to log in/);
    // Another address is not held up by them, and a device that logs in is not limited by it.
    expect(await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: x'], 'x') })).toBeTruthy();
    const { client, greeting } = await RawSmtp.connect(port, { localAddress: '127.0.0.3' });
    expect(greeting).toMatch(/^220 /);
    expect(await client.read()).toMatch(/^421 4\.7\.0 No login in time/); // after smtp.authTimeout, with no command from it
    // Their time is up too: the address may connect again.
    expect((await RawSmtp.connect(port, { localAddress: '127.0.0.2' })).greeting).toMatch(/^220 /);
  });

  it('keeps a fifth of smtp.maxClients for devices that logged in lately while strangers hold the rest', async () => {
    const { port } = await setUp({}, { maxClients: 20, maxUnauthenticatedPerIp: 2, authTimeout: 60 });
    await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: first'], 'x') }); // 127.0.0.1 is a known device now
    for (let host = 10; host < 18; host++) {
      for (let n = 0; n < 2; n++) expect((await RawSmtp.connect(port, { localAddress: `127.0.0.${host}` })).greeting).toMatch(/^220 /);
    }
    expect((await RawSmtp.connect(port, { localAddress: '127.0.0.30' })).greeting).toMatch(/^421 4\.7\.0 The relay is busy/);
    await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: still'], 'x') });
    expect(provider.received.map((received) => /Subject: (\w+)/.exec(received.raw.toString())![1])).toEqual(['first', 'still']);
  });

  it('takes the device address from a PROXY header (v1 and v2), from a listed load balancer only', async () => {
    const { port } = await setUp({ top: { allowNetworks: ['192.0.2.0/24'] } }, { proxyProtocol: ['127.0.0.1'] });
    const v2 = (address: string) => {
      const body = Buffer.alloc(12);
      address.split('.').forEach((octet, i) => body.writeUInt8(Number(octet), i));
      Buffer.from([127, 0, 0, 1]).copy(body, 4);
      body.writeUInt16BE(40001, 8);
      body.writeUInt16BE(25, 10);
      return Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), Buffer.from([0x21, 0x11, 0, 12]), body]);
    };
    for (const [preface, address] of [['PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n', '192.0.2.7'], [v2('192.0.2.8'), '192.0.2.8']] as const) {
      const { client, greeting } = await RawSmtp.connect(port, { preface });
      expect(greeting).toMatch(/^220 /);
      expect(await client.command('EHLO device.local')).toMatch(/^250/m);
      expect(await client.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
      expect(await client.command('MAIL FROM:<mfp@printers.local>')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<alice@example.com>')).toMatch(/^250/);
      expect(await client.command('DATA')).toMatch(/^354/);
      expect(await client.write('Subject: proxied\r\n\r\nscan\r\n.\r\n')).toMatch(/^250/);
      client.close();
      expect(provider.received.at(-1)!.raw.toString()).toContain(`[${address}]`); // the Received field names the device
    }
    // From anywhere else a PROXY line is not believed: the connection's own address is outside allowNetworks.
    expect((await RawSmtp.connect(port, { localAddress: '127.0.0.2', preface: 'PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n' })).greeting).toMatch(/^554 5\.7\.1 /);
    // And the load balancer must send one.
    expect((await RawSmtp.connect(port, { preface: 'EHLO sneaky\r\n' })).greeting).not.toMatch(/^220 /);
  });

  it('never lets a smuggled second message reach the upstream', async () => {
    const { port } = await setUp();
    for (const [index, terminator] of FAKE_TERMINATORS.entries()) {
      const client = await session(port);
      expect(await client.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
      expect(await client.command('MAIL FROM:<mfp@printers.local>')).toMatch(/^250/);
      expect(await client.command('RCPT TO:<alice@example.com>')).toMatch(/^250/);
      expect(await client.command('DATA')).toMatch(/^354/);
      const reply = await client.write(`From: mfp@printers.local\r\nSubject: payload ${index}\r\n\r\nscan${terminator}${SMUGGLED}\r\n.\r\n`);
      expect(reply).toMatch(/^250 /);
      client.close();
      const received = provider.received.at(-1)!;
      expect(provider.received).toHaveLength(index + 1);
      expect(received.envelope).toEqual({ from: MAILBOX, to: ['alice@example.com'] });
      const { header, body } = splitMessage(received.raw);
      expect(headerValues(header, 'Subject')).toEqual([`payload ${index}`]);
      expect(body.toString('latin1')).toContain('wire the money'); // inside the one message
      expect(body.toString('latin1')).not.toMatch(/[^\r]\n|\r[^\n]|\x00/); // only CRLF line endings left
    }
  });

  it('refuses bare line endings with 554 5.6.11 when told to', async () => {
    const { port } = await setUp({}, { bareLineEndings: 'reject' });
    const client = await session(port);
    await client.login(DEVICE.username, DEVICE.password);
    await client.command('MAIL FROM:<mfp@printers.local>');
    await client.command('RCPT TO:<alice@example.com>');
    await client.command('DATA');
    expect(await client.write(`Subject: x\r\n\r\nscan\r.\r${SMUGGLED}\r\n.\r\n`)).toMatch(/^554 5\.6\.11 /);
    expect(provider.received).toHaveLength(0);
  });

  it('is not an open relay: no AUTH, no mail', async () => {
    const { port } = await setUp({ top: { unauthenticated: { networks: ['10.0.0.0/8'], account: 'office' } } });
    const client = await session(port);
    expect(await client.command('MAIL FROM:<spammer@example.org>')).toMatch(/^530 5\.7\.0 /);
    expect(await client.command('RCPT TO:<anyone@example.com>')).toMatch(/^503 /);
    expect(provider.received).toHaveLength(0);
  });

  it('turns away addresses outside allowNetworks before they can say anything', async () => {
    const { port } = await setUp({ top: { allowNetworks: ['192.0.2.0/24', '2001:db8::/32'] } });
    const { greeting } = await RawSmtp.connect(port);
    expect(greeting).toMatch(/^554 5\.7\.1 /);
  });

  it('lets listed networks send without AUTH, as the configured account, when switched on', async () => {
    const { port } = await setUp({ top: { unauthenticated: { networks: ['127.0.0.0/8'], account: 'office' } } });
    const client = await session(port);
    expect(await client.command('MAIL FROM:<alarm-panel@site.local>')).toMatch(/^250/);
    await client.command('RCPT TO:<alice@example.com>');
    await client.command('DATA');
    expect(await client.write('Subject: alarm\r\n\r\nzone 3\r\n.\r\n')).toMatch(/^250 /);
    expect(provider.received[0].envelope.from).toBe(MAILBOX);
  });

  it('locks an address out after repeated failures, even for the right password, until the window ends', async () => {
    const { port, httpPort } = await setUp({}, { authFailures: { maxPerIp: 3, maxPerUser: 100, window: 60, lockout: 1.5 } });
    const client = await session(port);
    for (let i = 0; i < 3; i++) expect(await client.login(DEVICE.username, 'guess')).toMatch(/^535 5\.7\.8 /);
    expect(await client.login(DEVICE.username, DEVICE.password)).toMatch(/^421 4\.7\.0 /);
    const again = await RawSmtp.connect(port);
    expect(again.greeting).toMatch(/^421 4\.7\.0 /);
    expect(await metric(httpPort, 'smtp_relay_smtp_auth_lockouts_total', { scope: 'ip' })).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 1600));
    const later = await session(port);
    expect(await later.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
  });

  it('locks a guessed user name but not for the address the device logs in from', async () => {
    const { port } = await setUp({}, { host: '::', authFailures: { maxPerIp: 100, maxPerUser: 3, window: 60, lockout: 60 } });
    const printer = await session(port, { host: '::1' });
    expect(await printer.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
    printer.close();
    const attacker = await session(port, { host: '127.0.0.1' });
    for (let i = 0; i < 3; i++) await attacker.login(DEVICE.username, `guess ${i}`);
    expect(await attacker.login(DEVICE.username, DEVICE.password)).toMatch(/^421 4\.7\.0 /);
    const printerAgain = await session(port, { host: '::1' });
    expect(await printerAgain.login(DEVICE.username, DEVICE.password)).toMatch(/^235/);
  });

  it('keeps a device to its allowed recipients, networks and recipient count', async () => {
    const { port } = await setUp({
      users: [
        { ...DEVICE, account: 'office', allowRecipients: ['example.com', 'boss@partner.test'], maxRecipients: 2 },
        { username: 'lab-printer', password: 'lab', account: 'office', allowNetworks: ['192.0.2.0/24'] },
      ],
    });
    const client = await session(port);
    await client.login(DEVICE.username, DEVICE.password);
    await client.command('MAIL FROM:<mfp@printers.local>');
    expect(await client.command('RCPT TO:<anyone@elsewhere.org>')).toMatch(/^550 5\.7\.1 /);
    expect(await client.command('RCPT TO:<boss@partner.test>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<alice@EXAMPLE.com>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<bob@example.com>')).toMatch(/^452 4\.5\.3 /);
    const lab = await session(port);
    expect(await lab.login('lab-printer', 'lab')).toMatch(/^535 5\.7\.8 /);
  });

  it('refuses control characters in addresses and user names', async () => {
    const { port } = await setUp();
    const client = await session(port);
    expect(await client.login('printer\x01', 'x')).toMatch(/^501 5\.5\.4 /);
    await client.login(DEVICE.username, DEVICE.password);
    expect(await client.command('MAIL FROM:<a\x00b@printers.local>')).toMatch(/^5\d\d /);
    expect(await client.command('MAIL FROM:<mfp@printers.local>')).toMatch(/^250/);
    expect(await client.command('RCPT TO:<x\x7f@example.com>')).toMatch(/^5\d\d /);
  });

  it('greets at once and serves a client that writes before the greeting, in order (BusyBox sendmail)', async () => {
    const { port } = await setUp();
    const net = await import('node:net');
    const socket = net.connect(port, '127.0.0.1');
    // BusyBox `sendmail -H 'openssl s_client ...'` writes its whole session without waiting.
    socket.write(
      `EHLO x\r\nAUTH PLAIN ${Buffer.from(`\0${DEVICE.username}\0${DEVICE.password}`).toString('base64')}\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n` +
        'Subject: early\r\n\r\nwritten before the greeting\r\n.\r\nQUIT\r\n',
    );
    const reply = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => (text += chunk));
      socket.on('close', () => resolve(text));
    });
    expect(reply.split('\r\n').filter((line) => /^\d{3} /.test(line)).map((line) => line.slice(0, 3))).toEqual(['220', '250', '235', '250', '250', '354', '250', '221']);
    expect(provider.received).toHaveLength(1);
  });

  it('limits connections per client address', async () => {
    const { port } = await setUp({}, { maxConnectionsPerIp: 2 });
    const first = await RawSmtp.connect(port);
    const second = await RawSmtp.connect(port);
    const third = await RawSmtp.connect(port);
    expect(first.greeting).toMatch(/^220/);
    expect(second.greeting).toMatch(/^220/);
    expect(third.greeting).toMatch(/^421 4\.7\.0 /);
  });

  it('speaks STARTTLS and implicit TLS to devices, and can require TLS before AUTH', async () => {
    const { port, app } = await setUp({}, { tls: { cert: FAKE_TLS.cert(), key: FAKE_TLS.key(), implicitPort: 0 }, requireTls: true });
    const clear = await session(port);
    expect(await clear.login(DEVICE.username, DEVICE.password)).toMatch(/^530 5\.7\.0 /);
    const base = ['--auth', 'PLAIN', '--auth-user', DEVICE.username, '--auth-password', DEVICE.password, '--from', 'mfp@printers.local', '--to', 'alice@example.com'];
    const starttls = await execFileAsync('swaks', ['--server', `127.0.0.1:${port}`, '--tls', ...base]);
    expect(starttls.stdout).toMatch(/<~  250 2\.6\.0 Ok: relayed as/);
    const implicit = await execFileAsync('swaks', ['--server', `127.0.0.1:${app.smtpsPort}`, '--tls-on-connect', ...base]);
    expect(implicit.stdout).toMatch(/<~  250 2\.6\.0 Ok: relayed as/);
    expect(provider.received).toHaveLength(2);
  });

  it('never writes a token, password, client secret or message body to the log', async () => {
    const { port, logs } = await setUp({ top: { log: { level: 'trace' } } });
    const marker = 'BODY-MARKER-7f3a';
    await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: message(['Subject: secret test'], marker) });
    await sendRaw(port, { from: 'mfp@printers.local', to: ['alice@example.com'], raw: 'x' }, { ...DEVICE, password: 'wrong-password-9c1d' }).catch(() => undefined);
    const secrets = [DEVICE.password, 'wrong-password-9c1d', provider.clientSecret, marker, ...provider.issuedSecrets()];
    expect(provider.issuedSecrets().length).toBeGreaterThanOrEqual(2); // an access token and a refresh token
    const text = logs.join('');
    for (const secret of secrets) expect(text).not.toContain(secret);
    expect(text).toContain('message relayed');
  });
});

#!/usr/bin/env node
import cluster from 'node:cluster';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile, readDataDir } from '../config/index.js';
import { queueCommand } from './queue.js';
import { traceCommand } from './trace.js';
import { login } from './login.js';
import { encryptTokenStore } from './tokens.js';
import { SignInError } from '../oauth/sign-in.js';
import { TokenStoreError } from '../oauth/token-store.js';
import { startApp } from '../app.js';
import { runWorker } from '../workers/index.js';
import { startDemo } from '../demo/demo.js';
import { generateClusterSecret } from '../cluster-state/index.js';
import { hashPassword } from '../listener/index.js';
import { describeConfig } from './check.js';
import { handoffCommand } from './handoff.js';
import { readSecretFromStdin } from './stdin.js';
import { ControlSocketError } from '../control/index.js';

const USAGE = `Usage: smtp-oauth-relay <command> [options]

Commands:
  serve [--config FILE]   run the relay (without a config file: the built-in demo)
  check [--config FILE]   validate the config and print what it sets up; exit 1 on problems
  health [--config FILE]  exit 0 when the relay of this config answers on /healthz (container health checks)
  hash-password           read a password on stdin, print a passwordHash for the config
  cluster-secret          print a new cluster.secret (32 random bytes, base64) for every replica
  queue [list]            messages waiting: id, account, age, attempts, next try, last reply
  queue failed            messages that failed for good
  queue show ID           one message's record and headers
  queue retry ID|--all    try now instead of at the next scheduled time
  queue delete ID         remove a message (queued or failed)
  queue handoff --data-dir DIR
                          hand a stopped replica's queue to the live replicas of the cluster
  trace [--id ID] [--user NAME] [--from ADDR] [--to ADDR] [--account NAME]
        [--since 2h] [--status failed] [--limit N] [--json]
                          search the delivery log (every replica, in a cluster) and print
                          each message's timeline: received, attempts, the provider's words, outcome
  login ACCOUNT [--browser]
                          sign an account in (device code, or the browser with PKCE) and store its token
  credentials create-certificate ACCOUNT [--days N]
                          make a key and a self-signed certificate (Microsoft certificate credentials)
  tokens encrypt [--old-key-file FILE]
                          rewrite the token store with the configured tokenKey (encrypt, or change key)
  demo [--host ADDR] [--port N] [--http-port N] [--data-dir DIR] [--provider microsoft|google]
       [--transport smtp|graph|gmail]
                          run the relay against a built-in local stand-in provider that speaks
                          Exchange Online's (default) or Gmail's wire (on 127.0.0.1 unless --host says otherwise);
                          --transport graph sends through its Microsoft Graph, gmail through its Gmail API

The config file is --config FILE, else $SMTP_OAUTH_RELAY_CONFIG, else ./config.yaml.
`;

const DEFAULT_CONFIG = './config.yaml';

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      host: { type: 'string' },
      port: { type: 'string' },
      'http-port': { type: 'string' },
      'data-dir': { type: 'string' },
      provider: { type: 'string' },
      transport: { type: 'string' },
      all: { type: 'boolean' },
      browser: { type: 'boolean' },
      'old-key-file': { type: 'string' },
      days: { type: 'string' },
      id: { type: 'string' },
      user: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      account: { type: 'string' },
      since: { type: 'string' },
      status: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command = 'help'] = positionals;
  const explicitConfig = values.config ?? process.env.SMTP_OAUTH_RELAY_CONFIG;
  const configPath = explicitConfig ?? DEFAULT_CONFIG;

  if (values.help || command === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  switch (command) {
    case 'serve':
      if (!explicitConfig && !existsSync(DEFAULT_CONFIG)) {
        process.stdout.write(`No ${DEFAULT_CONFIG} here and no --config given: starting the built-in demo.\n`);
        return runDemo(values);
      }
      return serve(configPath);
    case 'demo':
      return runDemo(values);
    case 'check':
      return check(configPath);
    case 'health':
      return health(configPath);
    case 'queue': {
      if (positionals[1] === 'handoff') {
        if (!values['data-dir']) {
          process.stderr.write('Usage: smtp-oauth-relay queue handoff --data-dir DIR [--config FILE]\n');
          return 2;
        }
        return handoffCommand(loadConfigFile(configPath), values['data-dir'], (text) => process.stdout.write(text));
      }
      const result = await queueCommand(readDataDir(configPath), positionals.slice(1), values.all ?? false);
      (result.code === 0 ? process.stdout : process.stderr).write(result.output);
      return result.code;
    }
    case 'trace': {
      const result = await traceCommand(values['data-dir'] ?? readDataDir(configPath), values);
      (result.code === 0 ? process.stdout : process.stderr).write(result.output);
      return result.code;
    }
    case 'login': {
      const name = positionals[1];
      if (!name) {
        process.stderr.write('Usage: smtp-oauth-relay login ACCOUNT [--browser] [--config FILE]\n');
        return 2;
      }
      await login(loadConfigFile(configPath), name, { browser: values.browser ?? false, write: (text) => process.stdout.write(text) });
      return 0;
    }
    case 'credentials': {
      const name = positionals[2];
      if (positionals[1] !== 'create-certificate' || !name) {
        process.stderr.write('Usage: smtp-oauth-relay credentials create-certificate ACCOUNT [--days N] [--config FILE]\n');
        return 2;
      }
      // Loaded only here: the X.509 library is needed by this command alone.
      const { createCertificate } = await import('./credentials.js');
      process.stdout.write(await createCertificate(loadConfigFile(configPath), name, Number(values.days ?? 365)));
      return 0;
    }
    case 'tokens':
      if (positionals[1] !== 'encrypt') {
        process.stderr.write('Usage: smtp-oauth-relay tokens encrypt [--old-key-file FILE] [--config FILE]\n');
        return 2;
      }
      process.stdout.write(await encryptTokenStore(loadConfigFile(configPath), values['old-key-file']));
      return 0;
    case 'cluster-secret':
      process.stdout.write(`${generateClusterSecret()}\n`);
      return 0;
    case 'hash-password': {
      const password = await readSecretFromStdin('Password: ');
      if (!password) {
        process.stderr.write('hash-password: no password given on stdin\n');
        return 1;
      }
      process.stdout.write(`${await hashPassword(password)}\n`);
      return 0;
    }
    default:
      process.stderr.write(`Unknown command "${command}".\n\n${USAGE}`);
      return 2;
  }
}

async function serve(configPath: string): Promise<number> {
  if (cluster.isWorker) return serveAsWorker(configPath);
  const app = await startApp(loadConfigFile(configPath));
  process.on('SIGHUP', () => {
    try {
      const needsRestart = app.reload(loadConfigFile(configPath));
      if (needsRestart.length) process.stderr.write(`SIGHUP: reloaded; these changes need a restart: ${needsRestart.join(', ')}\n`);
    } catch (error) {
      // A broken edit must not take the running relay down: keep the old config.
      process.stderr.write(`SIGHUP: config not reloaded, the running one stays:\n${(error as Error).message}\n`);
    }
  });
  await untilSignal();
  await app.stop();
  return 0;
}

/**
 * A worker process of `serve` (smtp.workers above 1), started by the primary with the same command.
 * The primary decides when it stops: signals a terminal sends to the whole group are left to it.
 */
async function serveAsWorker(configPath: string): Promise<number> {
  for (const signal of ['SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  await runWorker(loadConfigFile(configPath), () => loadConfigFile(configPath));
  return 0;
}

async function runDemo(values: { host?: string; port?: string; 'http-port'?: string; 'data-dir'?: string; provider?: string; transport?: string }): Promise<number> {
  const transport = values.transport ?? 'smtp';
  if (transport !== 'smtp' && transport !== 'graph' && transport !== 'gmail') {
    process.stderr.write(`--transport ${transport}: the demo sends through smtp (the default), graph (Microsoft Graph) or gmail (the Gmail API)\n`);
    return 2;
  }
  // Graph is Microsoft's and the Gmail API Google's: the transport names the provider.
  const provider = values.provider ?? (transport === 'gmail' ? 'google' : 'microsoft');
  if (provider !== 'microsoft' && provider !== 'google') {
    process.stderr.write(`--provider ${provider}: the demo plays microsoft (Exchange Online) or google (Gmail)\n`);
    return 2;
  }
  if ((transport === 'graph' && provider !== 'microsoft') || (transport === 'gmail' && provider !== 'google')) {
    process.stderr.write(`--transport ${transport} belongs to ${transport === 'graph' ? 'microsoft' : 'google'}: drop --provider or pick the other transport\n`);
    return 2;
  }
  // The demo's password is printed and published: it listens on this machine only unless told.
  const host = values.host ?? '127.0.0.1';
  const demo = await startDemo({
    provider,
    transport,
    dataDir: values['data-dir'] ?? './data',
    smtpHost: host,
    smtpPort: Number(values.port ?? 2525),
    httpHost: host,
    httpPort: Number(values['http-port'] ?? 9464),
    logLevel: 'info',
  });
  process.stdout.write(demo.banner + '\n');
  await untilSignal();
  await demo.stop();
  return 0;
}

async function check(configPath: string): Promise<number> {
  const loaded = loadConfigFile(configPath);
  process.stdout.write(await describeConfig(loaded));
  return 0;
}

/** Asks the relay's own HTTP listener, wherever the config puts it (http.host, http.port). */
async function health(configPath: string): Promise<number> {
  const { host, port } = loadConfigFile(configPath).config.http;
  const target = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  try {
    const response = await fetch(`http://${target}:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
    if (response.ok) return 0;
    process.stderr.write(`unhealthy: /healthz answered ${response.status}\n`);
  } catch (error) {
    process.stderr.write(`unhealthy: http://${target}:${port}/healthz did not answer (${(error as Error).message})\n`);
  }
  return 1;
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.stderr.write(`${signal} received, stopping\n`);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof SignInError || error instanceof TokenStoreError || error instanceof ControlSocketError) {
      process.stderr.write(`${error.message}\n  ${error.hint}\n`);
      process.exit(1);
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`Configuration problems in ${error.source}:\n${error.problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}\n`);
      process.exit(1);
    }
    const err = error as NodeJS.ErrnoException;
    // A worker process's socket is bound through the primary: its failure says bind.
    if ((err.syscall === 'listen' || err.syscall === 'bind') && (err.code === 'EADDRINUSE' || err.code === 'EACCES')) {
      process.stderr.write(`Cannot listen: ${err.message}. Choose another port (smtp.port / http.port) or stop what uses it.\n`);
      process.exit(1);
    }
    if (err.code === 'EACCES' || err.code === 'EROFS') {
      process.stderr.write(`Cannot write: ${err.message}. Give the relay a writable data directory (dataDir, or --data-dir for the demo; /data in the image).\n`);
      process.exit(1);
    }
    process.stderr.write(`${err.stack ?? String(error)}\n`);
    process.exit(1);
  },
);

import { execFile, spawn } from 'node:child_process';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PrivatePostfixOptions {
  /** Where it relays everything: [127.0.0.1]:relayPort. */
  relayPort: number;
  /** Also an SMTP server on this loopback port (without it, mail enters only through sendmail). */
  smtpPort?: number;
  /** SASL PLAIN credentials for the relay host. */
  auth?: { username: string; password: string };
  /** STARTTLS to the relay host, trusting this CA. */
  tlsCaFile?: string;
  smtputf8?: 'yes' | 'no';
}

/**
 * A Postfix of its own (Debian's package, never the system instance): its own config directory,
 * queue and logs under `root`, loopback only. Tests use it as a smarthost client of the relay;
 * the benchmark as the server the relay is compared with.
 */
export class PrivatePostfix {
  private constructor(
    private readonly configDir: string,
    private readonly root: string,
  ) {}

  /** The master process, parent of every smtpd, cleanup, qmgr and smtp. */
  get masterPid(): number {
    return Number(readFileSync(path.join(this.root, 'spool', 'pid', 'master.pid'), 'utf8').trim());
  }

  static installed(): boolean {
    return existsSync('/usr/sbin/postfix');
  }

  static async start(root: string, options: PrivatePostfixOptions): Promise<PrivatePostfix> {
    if (!PrivatePostfix.installed()) throw new Error('postfix is not installed: apt-get install postfix libsasl2-modules (.ci/run does)');
    const configDir = path.join(root, 'etc');
    for (const folder of ['etc', 'spool', 'data']) await mkdir(path.join(root, folder), { recursive: true });
    await chmod(path.dirname(root), 0o755);
    await chmod(root, 0o755);
    await chown(path.join(root, 'data'), ...(await postfixIds()));
    await writeFile(path.join(configDir, 'master.cf'), masterCf(await readFile('/etc/postfix/master.cf', 'utf8'), options.smtpPort));
    await writeFile(path.join(configDir, 'main.cf'), mainCf(root, options));
    await run('postfix', ['-c', configDir, 'start']);
    return new PrivatePostfix(configDir, root);
  }

  /** Submits a message file through sendmail and flushes the queue. */
  async send(file: string, from: string, to: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const child = spawn('/usr/sbin/sendmail', ['-C', this.configDir, '-f', from, to], { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`sendmail exited ${code}: ${stderr}`))));
      createReadStream(file).pipe(child.stdin);
    });
    await run('postqueue', ['-c', this.configDir, '-f']);
  }

  async stop(): Promise<void> {
    await run('postfix', ['-c', this.configDir, 'stop']).catch(() => undefined);
  }
}

function mainCf(root: string, options: PrivatePostfixOptions): string {
  const lines = [
    'compatibility_level = 3.6',
    `queue_directory = ${root}/spool`,
    `data_directory = ${root}/data`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    'myhostname = office-mail.test',
    'mydestination =',
    'mynetworks = 127.0.0.0/8',
    'smtpd_peername_lookup = no',
    `maillog_file_prefixes = ${root}`,
    `maillog_file = ${root}/maillog`,
    `relayhost = [127.0.0.1]:${options.relayPort}`,
    `smtp_tls_security_level = ${options.tlsCaFile ? 'encrypt' : 'none'}`,
    `smtputf8_enable = ${options.smtputf8 ?? 'yes'}`,
  ];
  if (options.smtpPort === undefined) lines.push('master_service_disable = inet');
  if (options.tlsCaFile) lines.push(`smtp_tls_CAfile = ${options.tlsCaFile}`);
  if (options.auth) {
    lines.push(
      'smtp_sasl_auth_enable = yes',
      `smtp_sasl_password_maps = static:{${options.auth.username}:${options.auth.password}}`,
      'smtp_sasl_security_options = noanonymous',
      'smtp_sasl_tls_security_options = noanonymous',
    );
  }
  return lines.join('\n') + '\n';
}

/** The package's master.cf, with no chroot (the private queue has no chroot files) and smtpd on smtpPort. */
function masterCf(packaged: string, smtpPort: number | undefined): string {
  return packaged
    .split('\n')
    .map((line) => {
      const fields = line.split(/\s+/);
      if (/^[#\s]/.test(line) || fields.length < 8) return line;
      if (fields[0] === 'smtp' && fields[1] === 'inet') fields[0] = `127.0.0.1:${smtpPort ?? 25}`;
      fields[4] = 'n';
      return fields.join(' ');
    })
    .join('\n');
}

async function postfixIds(): Promise<[number, number]> {
  const { stdout } = await run('id', ['postfix']);
  return [Number(/uid=(\d+)/.exec(stdout)![1]), Number(/gid=(\d+)/.exec(stdout)![1])];
}

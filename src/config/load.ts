import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { configSchema, type Config } from './schema.js';
import { accountFlow, resolveAccount, type ResolvedAccount } from './providers.js';
import { crossCheck, type ConfigProblem } from './checks.js';

export type { ConfigProblem };

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: ConfigProblem[],
  ) {
    super(`${source}: ${problems.length} problem(s)\n` + problems.map((p) => `  ${p.path}: ${p.message}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  source: string;
  config: Config;
  accounts: Map<string, ResolvedAccount>;
  warnings: string[];
}

/** Keys that may hold a secret: each also accepts a `<key>File` twin (Docker secrets). */
const SECRET_KEYS = new Set(['clientSecret', 'refreshToken', 'password', 'passwordHash', 'tokenKey', 'adminPasswordHash', 'redisPassword', 'webhook', 'secret']);
/** Keys naming files, resolved against the config file's folder when relative. */
const PATH_KEYS = new Set(['dataDir', 'cert', 'key', 'ca', 'redisCa', 'serviceAccountKeyFile', 'clientCertificateFile', 'clientKeyFile', 'clientAssertionFile']);

type Tree = Record<string, unknown>;

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const source = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(source, 'utf8');
  } catch (error) {
    throw new ConfigError(source, [{ path: '(file)', message: `cannot read the config file (${(error as NodeJS.ErrnoException).code}); pass --config FILE or set SMTP_OAUTH_RELAY_CONFIG` }]);
  }
  return parseConfig(text, source, env);
}

/**
 * Only the data folder, for commands that work on the spool (`queue ...`): they must not need the
 * account secrets in their environment.
 */
export function readDataDir(file: string, env: NodeJS.ProcessEnv = process.env): string {
  const source = path.resolve(file);
  const problems: ConfigProblem[] = [];
  let raw: Tree;
  try {
    raw = (parseDocument(readFileSync(source, 'utf8')).toJS() ?? {}) as Tree;
  } catch (error) {
    throw new ConfigError(source, [{ path: '(file)', message: `cannot read the config file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` }]);
  }
  const dataDir = substituteEnv(String(raw.dataDir ?? './data'), ['dataDir'], { env, baseDir: path.dirname(source), problems, warnings: [] });
  if (problems.length) throw new ConfigError(source, problems);
  return path.resolve(path.dirname(source), dataDir);
}

export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const document = parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      source,
      document.errors.map((error) => ({ path: `(yaml line ${error.linePos?.[0].line ?? '?'})`, message: error.message.split('\n')[0] })),
    );
  }
  const raw = (document.toJS() ?? {}) as unknown;
  const problems: ConfigProblem[] = [];
  const baseDir = path.dirname(source);
  const secretWarnings: string[] = [];
  const prepared = prepareTree(raw, [], { env, baseDir, problems, warnings: secretWarnings });
  const parsed = configSchema.safeParse(prepared);
  problems.push(...crossCheck(prepared as Record<string, unknown>));
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      problems.push({ path: formatPath(issue.path) || '(top level)', message: describeIssue(issue) });
    }
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(source, dedupe(problems));

  const config = parsed.data;
  const accounts = new Map(Object.entries(config.accounts).map(([name, account]) => [name, resolveAccount(name, account, config.delivery)]));
  return { source, config, accounts, warnings: [...collectWarnings(source, config), ...secretWarnings] };
}

interface PrepareContext {
  env: NodeJS.ProcessEnv;
  baseDir: string;
  problems: ConfigProblem[];
  warnings: string[];
}

/** "its group", "every user" or "its group and every user" when others than the owner may read the file. */
function readableByOthers(file: string): string | undefined {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return undefined;
  }
  const group = (mode & 0o040) !== 0;
  const world = (mode & 0o004) !== 0;
  return group && world ? 'its group and every user on this machine' : group ? 'its group' : world ? 'every user on this machine' : undefined;
}

/** Substitutes ${VAR}, reads *File secrets and anchors relative paths, recording every problem. */
function prepareTree(node: unknown, at: (string | number)[], ctx: PrepareContext): unknown {
  if (typeof node === 'string') return substituteEnv(node, at, ctx);
  if (Array.isArray(node)) return node.map((item, index) => prepareTree(item, [...at, index], ctx));
  if (node === null || typeof node !== 'object') return node;
  const result: Tree = {};
  for (const [key, value] of Object.entries(node as Tree)) {
    const prepared = prepareTree(value, [...at, key], ctx);
    const secretKey = key.endsWith('File') ? key.slice(0, -'File'.length) : undefined;
    if (secretKey && SECRET_KEYS.has(secretKey)) {
      if ((node as Tree)[secretKey] !== undefined) {
        ctx.problems.push({ path: formatPath([...at, key]), message: `give either ${secretKey} or ${key}, not both` });
        continue;
      }
      result[secretKey] = readSecretFile(String(prepared), [...at, key], ctx);
    } else if (PATH_KEYS.has(key) && typeof prepared === 'string' && prepared !== '') {
      result[key] = path.resolve(ctx.baseDir, prepared);
    } else {
      result[key] = prepared;
    }
  }
  return result;
}

const ENV_REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function substituteEnv(text: string, at: (string | number)[], ctx: PrepareContext): string {
  return text.replace(ENV_REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    const value = ctx.env[name!];
    if (value !== undefined && value !== '') return value;
    if (fallback !== undefined) return fallback;
    ctx.problems.push({ path: formatPath(at), message: `environment variable ${name} is not set (set it, or write \${${name}:-default})` });
    return match; // left in place so that the same key is not reported again as missing
  });
}

function readSecretFile(file: string, at: (string | number)[], ctx: PrepareContext): string | undefined {
  const resolved = path.resolve(ctx.baseDir, file);
  const exposure = readableByOthers(resolved);
  if (exposure) ctx.warnings.push(`${formatPath(at)}: ${resolved} is readable by ${exposure}; chmod 600 it (or 640 for a group the relay runs as)`);
  try {
    // Secret files usually end with a newline the editor or `echo` added; it is never part of a secret.
    return readFileSync(resolved, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    ctx.problems.push({ path: formatPath(at), message: `cannot read ${resolved} (${(error as NodeJS.ErrnoException).code})` });
    return undefined;
  }
}

function formatPath(at: readonly PropertyKey[]): string {
  return at.map((part, index) => (typeof part === 'number' ? `[${part}]` : `${index ? '.' : ''}${String(part)}`)).join('');
}

function describeIssue(issue: { code: string; message: string; keys?: string[]; expected?: string; input?: unknown }): string {
  if (issue.code === 'unrecognized_keys') return `unknown key(s) ${issue.keys?.join(', ')}: check the spelling against config.example.yaml`;
  if (issue.code === 'invalid_type' && issue.input === undefined) return `required (${issue.expected})`;
  return issue.message;
}

function dedupe(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => !seen.has(p.path + p.message) && seen.add(p.path + p.message));
}

function collectWarnings(source: string, config: Config): string[] {
  const warnings: string[] = [];
  const exposure = readableByOthers(source);
  if (exposure) warnings.push(`${source} is readable by ${exposure}; if it holds secrets, chmod 600 it`);
  if (!config.tokenKey) {
    warnings.push('tokenKey is not set: stored refresh tokens are protected by file mode 0600 only; set tokenKey (or tokenKeyFile) to encrypt them');
  }
  for (const [name, account] of Object.entries(config.accounts)) {
    if (accountFlow(account) === 'refresh_token' && !account.refreshToken) {
      warnings.push(`accounts.${name} has no refreshToken in the config: sign it in with \`smtp-oauth-relay login ${name}\` or the admin page (a token already in the store is used)`);
    }
  }
  if (!config.smtp.tls) {
    warnings.push('smtp.tls is not set: devices send their passwords in clear text; keep the relay on a trusted network');
  }
  return warnings;
}

import { accountFlow } from './providers.js';

/** One thing wrong with the configuration, named by its key path, with the fix. */
export interface ConfigProblem {
  path: string;
  message: string;
}

type Loose = Record<string, unknown> | undefined;

/**
 * Rules that join several keys. They run on the raw tree whether or not the schema passed, so
 * that `check` reports every problem at once, and so they read it defensively.
 */
export function crossCheck(tree: Loose): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const add = (path: string, message: string) => problems.push({ path, message });
  const accounts = (isObject(tree?.accounts) ? tree.accounts : {}) as Record<string, Loose>;
  for (const [name, account] of Object.entries(accounts)) {
    if (!isObject(account)) continue;
    const at = `accounts.${name}`;
    const hve = account.service === 'hve';
    const flow = accountFlow(account);
    if (hve && account.provider !== 'microsoft') add(`${at}.service`, 'service hve (High Volume Email) is Microsoft 365 only; use it with provider microsoft');
    if (hve && flow !== 'client_credentials') add(`${at}.flow`, 'High Volume Email signs in as the app: use flow client_credentials (the default for service hve)');
    if (account.provider === 'microsoft' && !account.tenant && !account.tokenUrl) {
      add(`${at}.tenant`, 'required for provider microsoft: the directory id or domain, e.g. contoso.onmicrosoft.com');
    }
    const upstream = isObject(account.upstream) ? account.upstream : {};
    const transport = upstream.transport ?? 'smtp';
    if (account.provider === 'custom') {
      if (!account.tokenUrl) add(`${at}.tokenUrl`, 'required for provider custom');
      if (transport === 'smtp' && !upstream.host) add(`${at}.upstream`, 'required for provider custom: give upstream.host (and port)');
      if (transport !== 'smtp' && !upstream.apiUrl) add(`${at}.upstream.apiUrl`, `required for provider custom with transport ${String(transport)}: the API's base URL`);
    }
    if (transport === 'graph' && account.provider === 'google') add(`${at}.upstream.transport`, 'graph is Microsoft Graph: use transport gmail (or smtp) with provider google');
    if (transport === 'gmail' && account.provider === 'microsoft') add(`${at}.upstream.transport`, 'gmail is the Gmail API: use transport graph (or smtp) with provider microsoft');
    if (transport !== 'smtp' && hve) add(`${at}.upstream.transport`, 'High Volume Email is SMTP only: drop upstream.transport (or service hve)');
    if (upstream.saveToSentItems !== undefined && transport !== 'graph') add(`${at}.upstream.saveToSentItems`, 'only transport graph can choose: drop the key (SMTP submission and the Gmail API always keep a sent copy)');
    if (flow === 'service_account' && account.provider === 'microsoft') add(`${at}.flow`, 'service_account is the JWT bearer grant of Google Workspace (or a custom server); Microsoft uses client_credentials');
    if (flow === 'service_account' && !account.serviceAccountKeyFile) add(`${at}.serviceAccountKeyFile`, 'required for flow service_account: the JSON key of the service account');
    const credentials = ['clientSecret', 'clientCertificateFile', 'clientAssertionFile'].filter((key) => account[key] !== undefined);
    if (flow === 'client_credentials' && credentials.length === 0) add(`${at}.clientSecret`, 'flow client_credentials needs a credential: clientSecret (or clientSecretFile), clientCertificateFile, or clientAssertionFile');
    if (credentials.length > 1) add(`${at}.${credentials[1]}`, `give one credential, not ${credentials.join(' and ')}`);
    if (flow === 'client_credentials' && account.provider === 'google') add(`${at}.flow`, 'Google has no client_credentials grant for Gmail; use refresh_token');
  }
  problems.push(...providerLookupProblems(tree, accounts));
  const unauthenticated = tree?.unauthenticated;
  if (isObject(unauthenticated) && typeof unauthenticated.account === 'string' && !(unauthenticated.account in accounts)) {
    add('unauthenticated.account', `no account named "${unauthenticated.account}"; accounts are: ${Object.keys(accounts).join(', ') || 'none'}`);
  }
  const smtp = isObject(tree?.smtp) ? tree.smtp : {};
  if (smtp.requireTls === true && !isObject(smtp.tls)) add('smtp.requireTls', 'needs smtp.tls (cert and key) so devices can start TLS');
  const notify = tree?.notify;
  const bounces = isObject(tree?.bounces) ? tree.bounces : {};
  if (isObject(notify) && notify.email === true && !bounces.postmaster) add('notify.email', 'e-mails go to bounces.postmaster: set it (e.g. it@example.com), or drop notify.email');
  const users = Array.isArray(tree?.users) ? (tree.users as Loose[]) : [];
  const seen = new Set<unknown>();
  users.forEach((user, index) => {
    if (!isObject(user)) return;
    const at = `users[${index}]`;
    if (typeof user.account === 'string' && !(user.account in accounts)) {
      add(`${at}.account`, `no account named "${user.account}"; accounts are: ${Object.keys(accounts).join(', ') || 'none'}`);
    }
    if (!user.password === !user.passwordHash) add(`${at}.password`, 'give exactly one of password, passwordFile or passwordHash');
    if (seen.has(user.username)) add(`${at}.username`, `"${String(user.username)}" is listed twice`);
    seen.add(user.username);
  });
  return problems;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** trace.providerLookup asks Exchange Online as the app: a Microsoft account with an app credential. */
function providerLookupProblems(tree: Loose, accounts: Record<string, Loose>): ConfigProblem[] {
  const trace = isObject(tree?.trace) ? tree.trace : {};
  const lookup = trace.providerLookup;
  if (!Array.isArray(lookup)) return [];
  return lookup.flatMap((name, index): ConfigProblem[] => {
    const account = accounts[String(name)];
    const path = `trace.providerLookup[${index}]`;
    if (!isObject(account)) return [{ path, message: `no account named "${String(name)}"; accounts are: ${Object.keys(accounts).join(', ') || 'none'}` }];
    if (account.provider !== 'microsoft') return [{ path, message: `"${String(name)}" is not a microsoft account: only Exchange Online has a message trace to ask` }];
    if (!['clientSecret', 'clientCertificateFile', 'clientAssertionFile'].some((key) => account[key] !== undefined)) {
      return [{ path, message: `"${String(name)}" has no app credential: the message trace is asked as the app (give clientSecret or clientCertificateFile, and grant ExchangeMessageTrace.Read.All)` }];
    }
    return [];
  });
}

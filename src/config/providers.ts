import type { AccountConfig, ProviderName, OAuthFlow } from './schema.js';

export type TransportName = 'smtp' | 'graph' | 'gmail';

/** What a provider fills in when the account leaves it out. */
export interface SendingLimits {
  messagesPerMinute?: number;
  messagesPerDay?: number;
  recipientsPerDay?: number;
}

interface ProviderPreset {
  tokenUrl(tenant: string | undefined): string | undefined;
  authorizeUrl(tenant: string | undefined): string | undefined;
  deviceCodeUrl(tenant: string | undefined): string | undefined;
  /** Extra parameters for the authorize URL (Google: offline access, so a refresh token comes back). */
  authorizeParams?: Record<string, string>;
  scopes(flow: OAuthFlow, transport: TransportName): string | undefined;
  /** The HTTP API's base URL for the transports other than smtp. */
  apiUrl?: string;
  upstream?: { host: string; port: number; maxConnections: number; maxRecipientsPerMessage?: number };
  limits: SendingLimits;
}

/**
 * Microsoft High Volume Email (GA 31 March 2026): internal recipients only, works while SMTP AUTH
 * is off for mailboxes, signs in as the app. Microsoft advises at most 50 recipients per message.
 * smtp-hve.office365.com is still served too (set upstream.host).
 */
const HVE: Pick<ProviderPreset, 'upstream' | 'limits'> = {
  upstream: { host: 'smtp.hve.mx.microsoft', port: 587, maxConnections: 3, maxRecipientsPerMessage: 50 },
  limits: {},
};

const PRESETS: Record<ProviderName, ProviderPreset> = {
  microsoft: {
    tokenUrl: (tenant) => tenant && `https://login.microsoftonline.com/${encodeURIComponent(tenant)}/oauth2/v2.0/token`,
    authorizeUrl: (tenant) => tenant && `https://login.microsoftonline.com/${encodeURIComponent(tenant)}/oauth2/v2.0/authorize`,
    deviceCodeUrl: (tenant) => tenant && `https://login.microsoftonline.com/${encodeURIComponent(tenant)}/oauth2/v2.0/devicecode`,
    // SMTP AUTH's audience is Exchange (outlook.office.com); Graph's is graph.microsoft.com.
    scopes: (flow, transport) => {
      const audience = transport === 'graph' ? 'https://graph.microsoft.com' : flow === 'client_credentials' ? 'https://outlook.office365.com' : 'https://outlook.office.com';
      return flow === 'client_credentials' ? `${audience}/.default` : `${audience}/${transport === 'graph' ? 'Mail.Send' : 'SMTP.Send'} offline_access`;
    },
    apiUrl: 'https://graph.microsoft.com',
    // Exchange Online allows 3 concurrent connections per mailbox and 500 recipients per message.
    upstream: { host: 'smtp.office365.com', port: 587, maxConnections: 3, maxRecipientsPerMessage: 500 },
    // Exchange Online per mailbox: 30 messages a minute, 10,000 recipients a day.
    limits: { messagesPerMinute: 30, recipientsPerDay: 10_000 },
  },
  google: {
    tokenUrl: () => 'https://oauth2.googleapis.com/token',
    authorizeUrl: () => 'https://accounts.google.com/o/oauth2/v2/auth',
    // Google's device flow refuses the Gmail scope: no device code URL, the browser flow is used.
    deviceCodeUrl: () => undefined,
    authorizeParams: { access_type: 'offline', prompt: 'consent' },
    // The Gmail API needs only gmail.send; SMTP's XOAUTH2 needs the full-mail scope.
    scopes: (_flow, transport) => (transport === 'gmail' ? 'https://www.googleapis.com/auth/gmail.send' : 'https://mail.google.com/'),
    apiUrl: 'https://gmail.googleapis.com',
    upstream: { host: 'smtp.gmail.com', port: 587, maxConnections: 3, maxRecipientsPerMessage: 100 },
    // Gmail / Workspace per account: 2,000 messages and 10,000 recipients a day.
    limits: { messagesPerDay: 2_000, recipientsPerDay: 10_000 },
  },
  custom: {
    tokenUrl: () => undefined,
    authorizeUrl: () => undefined,
    deviceCodeUrl: () => undefined,
    scopes: () => undefined,
    limits: {},
  },
};

export interface ResolvedUpstream {
  transport: TransportName;
  /** Base URL of the HTTP API (graph, gmail). */
  apiUrl?: string;
  /** graph: keep Exchange's copy in Sent Items (false: the relay deletes it). */
  saveToSentItems: boolean;
  host: string;
  port: number;
  ca?: string;
  maxConnections: number;
  /** Recipients per transaction; more are sent in further transactions of the same message. */
  maxRecipientsPerMessage?: number;
  timeoutMs: number;
}

export interface ResolvedAccount {
  name: string;
  provider: ProviderName;
  mailbox: string;
  flow: OAuthFlow;
  clientId: string;
  clientSecret?: string;
  clientCertificateFile?: string;
  clientKeyFile?: string;
  clientAssertionFile?: string;
  credentialExpiresAt?: string;
  clientAuth?: 'basic' | 'body';
  refreshToken?: string;
  tokenUrl: string;
  authorizeUrl?: string;
  deviceCodeUrl?: string;
  authorizeParams: Record<string, string>;
  serviceAccountKeyFile?: string;
  scopes?: string;
  upstream: ResolvedUpstream;
  sendAs: string[];
  delivery: 'queue' | 'direct';
  limits: SendingLimits;
}

/** The account's OAuth flow: as configured, else client_credentials for High Volume Email, else refresh_token. */
export function accountFlow(account: { flow?: unknown; service?: unknown }): OAuthFlow {
  return (account.flow as OAuthFlow | undefined) ?? (account.service === 'hve' ? 'client_credentials' : 'refresh_token');
}

/** Fills provider defaults into a validated account (the schema has made sure custom gives them). */
export function resolveAccount(name: string, account: AccountConfig, delivery: 'queue' | 'direct'): ResolvedAccount {
  const hve = account.service === 'hve';
  const preset = hve ? { ...PRESETS.microsoft, ...HVE } : PRESETS[account.provider];
  const flow = accountFlow(account);
  const scopes = Array.isArray(account.scopes) ? account.scopes.join(' ') : account.scopes;
  const host = account.upstream?.host ?? preset.upstream?.host;
  const transport = account.upstream?.transport ?? 'smtp';
  return {
    name,
    provider: account.provider,
    mailbox: account.mailbox,
    flow,
    clientId: account.clientId,
    clientSecret: account.clientSecret,
    clientCertificateFile: account.clientCertificateFile,
    clientKeyFile: account.clientKeyFile,
    clientAssertionFile: account.clientAssertionFile,
    credentialExpiresAt: account.credentialExpiresAt,
    clientAuth: account.clientAuth,
    refreshToken: account.refreshToken,
    tokenUrl: (account.tokenUrl ?? preset.tokenUrl(account.tenant))!,
    authorizeUrl: account.authorizeUrl ?? preset.authorizeUrl(account.tenant),
    deviceCodeUrl: account.deviceCodeUrl ?? preset.deviceCodeUrl(account.tenant),
    authorizeParams: preset.authorizeParams ?? {},
    serviceAccountKeyFile: account.serviceAccountKeyFile,
    scopes: scopes ?? preset.scopes(flow, transport),
    upstream: {
      transport,
      apiUrl: (account.upstream?.apiUrl ?? preset.apiUrl)?.replace(/\/+$/, ''),
      saveToSentItems: account.upstream?.saveToSentItems ?? false,
      host: host ?? '',
      port: account.upstream?.port ?? preset.upstream?.port ?? 587,
      ca: account.upstream?.ca,
      maxConnections: account.upstream?.maxConnections ?? preset.upstream?.maxConnections ?? 3,
      // The APIs take a message whole: its recipients are its headers', in one request.
      maxRecipientsPerMessage: transport === 'smtp' ? (account.upstream?.maxRecipientsPerMessage ?? preset.upstream?.maxRecipientsPerMessage) : undefined,
      timeoutMs: (account.upstream?.timeout ?? 60) * 1000,
    },
    sendAs: account.sendAs.map((address) => address.toLowerCase()),
    delivery: account.delivery ?? delivery,
    limits: { ...preset.limits, ...account.limits },
  };
}

import { isIP } from 'node:net';
import { z } from 'zod';
import { parseByteSize, parseDuration } from './size.js';
import { parseNetwork } from './networks.js';
import { decodeClusterSecret } from '../util/cluster-secret.js';

/**
 * The one description of the configuration file: zod validates it and the TypeScript types are
 * derived from it, so the two can never disagree. Every key is documented in config.example.yaml.
 */

const byteSize = z
  .union([z.number().int().positive(), z.string()])
  .transform((value, ctx) => {
    const bytes = typeof value === 'number' ? value : parseByteSize(value);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a size; write bytes or e.g. "35MB", "512KB"` });
      return z.NEVER;
    }
    return bytes;
  });

const port = z.number().int().min(0).max(65535);
/** Seconds, as a number or "90s", "5m", "1h", "5d". */
const durationSeconds = z
  .union([z.number().positive(), z.string()])
  .transform((value, ctx) => {
    const seconds = typeof value === 'number' ? value : parseDuration(value);
    if (seconds === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration; write seconds or e.g. "90s", "5m", "1h", "5d"` });
      return z.NEVER;
    }
    return seconds;
  });

const deliveryMode = z.enum(['queue', 'direct']);

const tlsSchema = z
  .object({
    cert: z.string().min(1),
    key: z.string().min(1),
    /** Lowest TLS version offered to devices; TLSv1/TLSv1.1 only for old printers, and logged. */
    minVersion: z.enum(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    /** A second listener speaking TLS from the first byte (SMTPS, usually 465). */
    implicitPort: port.optional(),
    /** OpenSSL cipher list for TLS 1.2 (default: forward-secret AEAD suites only). */
    ciphers: z.string().min(1).optional(),
    /**
     * Networks of old devices that may use TLS 1.0/1.1 and old cipher suites (OpenSSL security
     * level 0). Everyone else keeps the strict settings. Logged at start.
     */
    legacyDevices: z.array(z.string().refine((value) => parseNetwork(value) !== undefined, { message: 'must be an IP address or CIDR range' })).optional(),
  })
  .strict();

/** "192.168.10.0/24", "10.1.2.3", "fd00::/8". */
const network = z.string().refine((value) => parseNetwork(value) !== undefined, { message: 'must be an IP address or CIDR range, e.g. 192.168.10.0/24 or fd00::/8' });

const lineEndingPolicy = z.enum(['normalize', 'reject']);

const WORKERS = 'must be auto (one process per CPU) or a number of processes from 1 to 64';

const smtpSchema = z
  .object({
    host: z.string().default('0.0.0.0'),
    port: port.default(2525),
    /** Name used in the greeting and EHLO reply. */
    hostname: z.string().optional(),
    maxMessageSize: byteSize.default(35 * 1024 * 1024),
    maxClients: z.number().int().positive().default(100),
    /**
     * Processes that take devices' sessions (each its own event loop, a share of maxClients); the
     * primary keeps the queue, tokens and the console. 1: everything in one process. auto: one per CPU.
     */
    workers: z.union([z.literal('auto'), z.number().int(WORKERS).min(1, WORKERS).max(64, WORKERS)], { message: WORKERS }).default(1),
    /** Seconds of silence from a device before its session is closed. */
    socketTimeout: durationSeconds.default(120),
    tls: tlsSchema.optional(),
    /** Refuse AUTH and MAIL before STARTTLS (530 5.7.0). Needs tls. */
    requireTls: z.boolean().default(false),
    /** Recipients per message (a user may set its own). */
    maxRecipients: z.number().int().positive().default(100),
    maxConnectionsPerIp: z.number().int().positive().default(50),
    /**
     * Load balancers (addresses) in front of the listener that send the PROXY protocol (v1 or v2):
     * from them the header is required and names the device; from anyone else it is not believed.
     */
    proxyProtocol: z.array(z.string().refine((value) => isIP(value) !== 0, { message: 'must be the IP address of a load balancer, e.g. 10.0.0.5' })).default([]),
    /** Sessions not logged in yet per client address; past it, 421 (idle strangers cannot fill maxClients). */
    maxUnauthenticatedPerIp: z.number().int().positive().default(10),
    /** Seconds a session has to log in (or, from an unauthenticated network, to start a transaction) before 421. */
    authTimeout: durationSeconds.default(30),
    /** Cap on a message's header block and on its number of header lines. */
    maxHeaderSize: byteSize.default(256 * 1024),
    maxHeaderLines: z.number().int().positive().default(1000),
    /** normalize: bare CR or LF becomes CRLF (legacy devices); reject: 554 5.6.11. Either way no smuggling. */
    bareLineEndings: lineEndingPolicy.default('normalize'),
    /**
     * The Received field added to each message (RFC 5321 4.4): full (device address, EHLO name and
     * authenticated user, like Postfix's smtpd_sasl_authenticated_header), minimal (relay and queue
     * id only), or off.
     */
    receivedHeader: z.enum(['full', 'minimal', 'off']).default('full'),
    /** Failed AUTH per client address and per user name within `window` before a `lockout`. */
    authFailures: z
      .object({
        maxPerIp: z.number().int().positive().default(10),
        maxPerUser: z.number().int().positive().default(10),
        window: durationSeconds.default(15 * 60),
        lockout: durationSeconds.default(15 * 60),
      })
      .strict()
      .default({ maxPerIp: 10, maxPerUser: 10, window: 900, lockout: 900 }),
  })
  .strict();

const httpSchema = z
  .object({
    host: z.string().default('0.0.0.0'),
    port: port.default(9464),
    /** The address browsers use to reach this listener; the OAuth redirect URI is <publicUrl>/oauth/callback. */
    publicUrl: z.string().url().optional(),
    /** Protects the admin page; without it the page answers only clients on this machine. */
    adminPasswordHash: z.string().regex(/^scrypt\$/, 'must be the output of `smtp-oauth-relay hash-password`').optional(),
    /**
     * The reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For / Forwarded name the
     * real client of the console; from anyone else those headers make a request nobody's.
     */
    trustProxy: z
      .union([z.boolean(), z.array(network)])
      .default(false)
      .transform((value, ctx) => {
        if (value !== true) return value === false ? [] : value;
        ctx.addIssue({ code: 'custom', message: 'true would believe X-Forwarded-For from anyone: list the proxy addresses instead, e.g. trustProxy: [127.0.0.1, 10.0.0.5/32]' });
        return z.NEVER;
      }),
    /**
     * Host names, besides addresses, one-label and private names (*.svc, *.local, ...) and
     * publicUrl's, under which /metrics and /readyz answer (a foreign name is a DNS-rebinding page).
     */
    allowedHosts: z.array(z.string().min(1)).default([]),
  })
  .strict();

const upstreamSchema = z
  .object({
    /**
     * How messages leave: smtp (submission with XOAUTH2, the default), graph (Microsoft Graph
     * sendMail, for tenants with SMTP AUTH off) or gmail (the Gmail API's messages.send).
     */
    transport: z.enum(['smtp', 'graph', 'gmail']).default('smtp'),
    /** Where graph or gmail sends (default https://graph.microsoft.com or https://gmail.googleapis.com): a private stand-in, a proxy. */
    apiUrl: z.string().url().optional(),
    /**
     * graph only: keep the copy Exchange files in the mailbox's Sent Items. Graph's MIME send always
     * files one; with false (a printer needs none) the relay deletes it afterwards, which needs Mail.ReadWrite.
     */
    saveToSentItems: z.boolean().optional(),
    host: z.string().min(1),
    port: port.default(587),
    /** PEM file of an extra CA to trust (a private or test upstream). */
    ca: z.string().optional(),
    /** Pooled connections per account; Exchange Online allows 3 per mailbox. */
    maxConnections: z.number().int().positive().optional(),
    /** Seconds allowed for connect, greeting and each command. */
    timeout: durationSeconds.default(60),
    /**
     * Recipients per upstream transaction; a message with more is sent in several transactions of
     * the same content (like Postfix's smtp_destination_recipient_limit). Default: Exchange Online
     * 500, Gmail 100, High Volume Email 50, custom unlimited.
     */
    maxRecipientsPerMessage: z.number().int().positive().optional(),
  })
  .strict();

const emailAddress = z.string().regex(/^[^\s@<>]+@[^\s@<>]+$/, 'must be an e-mail address like scanner@contoso.com');

const accountSchema = z
  .object({
    provider: z.enum(['microsoft', 'google', 'custom']),
    mailbox: emailAddress,
    tenant: z.string().optional(),
    clientId: z.string().min(1),
    clientSecret: z.string().optional(),
    /** Certificate credential (Microsoft): a PEM certificate, and its key (or one PEM holding both). */
    clientCertificateFile: z.string().optional(),
    clientKeyFile: z.string().optional(),
    /** Workload identity federation: a file holding a JWT the platform rotates (re-read for each token request). */
    clientAssertionFile: z.string().optional(),
    /** When the client secret expires (the Entra portal shows it): warned about 30 days ahead. */
    credentialExpiresAt: z.string().refine((value) => !Number.isNaN(Date.parse(value)), { message: 'must be a date, e.g. 2027-03-31' }).optional(),
    /** Default: refresh_token, or client_credentials for service hve. */
    flow: z.enum(['refresh_token', 'client_credentials', 'service_account']).optional(),
    /** microsoft only: mailbox (SMTP AUTH, the default) or hve (High Volume Email, internal recipients only). */
    service: z.enum(['mailbox', 'hve']).default('mailbox'),
    /** The initial refresh token; optional when `login` or the admin page's Sign in provides one. */
    refreshToken: z.string().optional(),
    /** Google Workspace service account key (JSON) with domain-wide delegation, for flow service_account. */
    serviceAccountKeyFile: z.string().optional(),
    tokenUrl: z.string().url().optional(),
    /** How the client secret goes to the token endpoint: basic (RFC 6749 §2.3.1) or body; default body for microsoft/google, basic then body for custom. */
    clientAuth: z.enum(['basic', 'body']).optional(),
    /** Where a browser signs in (authorization-code flow with PKCE). */
    authorizeUrl: z.string().url().optional(),
    /** Where `login` asks for a device code (RFC 8628). */
    deviceCodeUrl: z.string().url().optional(),
    scopes: z.union([z.string(), z.array(z.string())]).optional(),
    upstream: upstreamSchema.partial({ host: true }).optional(),
    /** Addresses this mailbox may send as (shared mailboxes, aliases): kept as they are. */
    sendAs: z.array(emailAddress).default([]),
    /** Overrides the global delivery mode for this account. */
    delivery: deliveryMode.optional(),
    /** Sending pace; defaults to the provider's published ceilings (none for custom). */
    limits: z
      .object({
        messagesPerMinute: z.number().int().positive().optional(),
        messagesPerDay: z.number().int().positive().optional(),
        recipientsPerDay: z.number().int().positive().optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

const userSchema = z
  .object({
    username: z.string().min(1).regex(/^[^\s\x00-\x1f]+$/, 'must not contain spaces or control characters'),
    password: z.string().min(1).optional(),
    passwordHash: z.string().regex(/^scrypt\$/, 'must be the output of `smtp-oauth-relay hash-password`').optional(),
    account: z.string().min(1),
    /** Where this device may log in from (default: wherever allowNetworks lets in). */
    allowNetworks: z.array(network).optional(),
    /** Recipient addresses or domains ("example.com", "@example.com") this device may send to. */
    allowRecipients: z.array(z.string().min(1)).optional(),
    maxRecipients: z.number().int().positive().optional(),
    bareLineEndings: lineEndingPolicy.optional(),
    /** The device normally sends at least this often ("1d"): the console flags it when it has been silent longer. */
    expectEvery: durationSeconds.optional(),
  })
  .strict();

const oauthSchema = z
  .object({
    /** Seconds between keep-alive refreshes of every account, mail or not (refresh tokens die unused). */
    keepAliveInterval: durationSeconds.default(24 * 3600),
    /** Attempts at the token endpoint on network errors and 5xx before a send is deferred. */
    retries: z.number().int().min(0).default(3),
    /** Seconds before the first retry; doubled each time. */
    retryDelay: durationSeconds.default(0.5),
    /** While an account waits to be signed in again, how often its queue checks whether it is back. */
    reauthCheckInterval: durationSeconds.default(30),
  })
  .strict();

const queueSchema = z
  .object({
    retry: z
      .object({
        /** Wait before the second attempt; doubled after each failure, with jitter. */
        initialDelay: durationSeconds.default(60),
        maxDelay: durationSeconds.default(3600),
        /** After this long in the queue a message fails and is reported. */
        maxAge: durationSeconds.default(5 * 86400),
      })
      .strict()
      .default({ initialDelay: 60, maxDelay: 3600, maxAge: 5 * 86400 }),
    /** New mail gets 452 4.3.1 when the spool holds this much. */
    maxSize: byteSize.default(2 * 1024 ** 3),
    /** New mail gets 452 4.3.1 when the data disk has less free space than this. */
    minFreeDisk: byteSize.default(256 * 1024 ** 2),
    /** On SIGTERM, how long deliveries in flight may take to finish. */
    shutdownTimeout: durationSeconds.default(30),
    /** How long failed messages stay in spool/failed for the operator before they are deleted. */
    failedRetention: durationSeconds.default(30 * 86400),
  })
  .strict();

const bouncesSchema = z
  .object({
    /** Gets a delivery status notification for every message that fails for good. */
    postmaster: emailAddress.optional(),
    /** Also send it to the message's original sender, when the device may send to that address. */
    notifySender: z.boolean().default(true),
    /** Failure reports per device user per hour; past it they are suppressed (and counted). */
    maxPerHour: z.number().int().positive().default(10),
    /** A sender that asked for delay notices (NOTIFY=DELAY) gets one after the message waited this long. */
    delayWarning: durationSeconds.default(4 * 3600),
  })
  .strict();

/** The delivery log (message trace) under dataDir/trace/. */
const traceSchema = z
  .object({
    /** Off: no delivery log (the console's Messages page and `trace` find nothing). */
    enabled: z.boolean().default(true),
    /** Keep each message's Subject in the log; false where subjects are confidential. */
    subjects: z.boolean().default(true),
    /** Days of log kept (one file per day). */
    retention: durationSeconds.default(30 * 86400),
    /** The most the log may take on disk; past it the oldest days go first (a flood cannot fill the disk). */
    maxSize: byteSize.default(1024 ** 3),
    /** How long a search waits for each other replica of a cluster. */
    clusterTimeout: durationSeconds.default(5),
    /**
     * The console's timeline also asks Exchange Online what it did with the message (Microsoft
     * Graph message trace, ExchangeMessageTrace.Read.All): true for every microsoft account, or a
     * list of account names. Needs the account's app credential (client secret or certificate).
     */
    providerLookup: z.union([z.boolean(), z.array(z.string().min(1))]).default(false),
  })
  .strict();

/** Alerts for admins without Prometheus: the same problems the shipped alert rules watch. */
const notifySchema = z
  .object({
    /** POSTs JSON with a `text` field (Slack- and Teams-style incoming webhooks take it). A secret: or webhookFile. */
    webhook: z.string().url().refine((value) => /^https?:/.test(value), { message: 'use an http:// or https:// URL' }).optional(),
    /** Also e-mail bounces.postmaster, through an account that can send. */
    email: z.boolean().default(false),
    /** The same problem is told again at most this often (and once per cluster). */
    minInterval: durationSeconds.default(3600),
    /** At most this many notifications an hour; past it they are counted and summarised in the next. */
    maxPerHour: z.number().int().positive().default(20),
    /** How often the relay looks for problems. */
    checkInterval: durationSeconds.default(60),
  })
  .strict();

const SECRET_FIX = 'make one with `smtp-oauth-relay cluster-secret` (or openssl rand -base64 32) and give every replica the same, e.g. secretFile: /run/secrets/cluster-secret';

/** Replicas that share provider limits, tokens and account state through Redis or Valkey. */
const clusterSchema = z
  .object({
    /** redis://[user:password@]host:port[/db] or rediss:// (TLS). The password may also come from redisPasswordFile. */
    redis: z.string().regex(/^rediss?:\/\//, 'use a redis:// or rediss:// URL, e.g. redis://valkey:6379'),
    redisPassword: z.string().optional(),
    /** PEM file of the CA that signed a rediss:// server's certificate (default: the system's). */
    redisCa: z.string().optional(),
    /**
     * What the replicas prove themselves to each other with (registry, announcements, shared
     * tokens, handoffs): at least 32 random bytes, base64 or hex, the same on every replica.
     */
    secret: z
      .string()
      .refine((value) => decodeClusterSecret(value) !== undefined, { message: `must be at least 32 random bytes, base64 or hex: ${SECRET_FIX}` })
      .optional(),
    /** This replica's name in the registry and the logs (default: the host name, a pod's name in Kubernetes). */
    name: z.string().min(1).optional(),
    /** Prefix of every key, so several relay clusters can share one Redis. */
    keyPrefix: z.string().default('smtp-oauth-relay:'),
    /** Where the other replicas reach this one's HTTP port (queue handoff): default the host name; in Kubernetes the pod IP. */
    advertiseHost: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((cluster, ctx) => {
    if (cluster.secret === undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: `required with cluster: ${SECRET_FIX}` });
  });

export const configSchema = z
  .object({
    /** Optional: replicas that share limits and tokens. Without it, everything stays in this process. */
    cluster: clusterSchema.optional(),
    /** queue: 250 once the message is safely on disk, then store-and-forward. direct: 250 after the upstream took it. */
    delivery: deliveryMode.default('queue'),
    queue: queueSchema.default(() => queueSchema.parse({})),
    bounces: bouncesSchema.default(() => bouncesSchema.parse({})),
    trace: traceSchema.default(() => traceSchema.parse({})),
    notify: notifySchema.optional(),
    smtp: smtpSchema.default(() => smtpSchema.parse({})),
    http: httpSchema.default(() => httpSchema.parse({})),
    dataDir: z.string().default('./data'),
    /** Encrypts stored refresh tokens (AES-256-GCM); any long random string, e.g. from `openssl rand -base64 32`. */
    tokenKey: z.string().min(16, 'use at least 16 characters (e.g. openssl rand -base64 32)').optional(),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    oauth: oauthSchema.default(() => oauthSchema.parse({})),
    /** Client addresses that may connect at all (empty: any). */
    allowNetworks: z.array(network).default([]),
    /** Devices that cannot AUTH: these networks may send without it, through one account. Off unless set. */
    unauthenticated: z.object({ networks: z.array(network).min(1), account: z.string().min(1) }).strict().optional(),
    accounts: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'account names use letters, digits, _ . -'), accountSchema),
    users: z.array(userSchema).min(1, 'add at least one device user'),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type AccountConfig = Config['accounts'][string];
export type UserConfig = Config['users'][number];
export type ProviderName = AccountConfig['provider'];
export type OAuthFlow = AccountConfig['flow'];

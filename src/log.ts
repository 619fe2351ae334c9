import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout. The redaction list is a second line of defence: no code path passes a
 * token, password or body to the logger in the first place.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'smtp-oauth-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['password', 'pass', 'accessToken', 'refreshToken', 'clientSecret', 'token', '*.password', '*.pass', '*.accessToken', '*.refreshToken', '*.clientSecret', '*.token'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

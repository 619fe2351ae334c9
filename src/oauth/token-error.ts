/**
 * Why no access token could be had. `reauth`: a human must act (sign in again, fix the secret);
 * retrying will not help. `unavailable`: the token endpoint could not be reached or failed.
 */
export class TokenError extends Error {
  constructor(
    readonly kind: 'reauth' | 'unavailable',
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'TokenError';
  }
}


export { TokenManager, TokenError, type AccessTokens, type AccountTokenStatus, type AccountState } from './token-manager.js';
export { TokenStore } from './token-store.js';
export { credentialExpiries, expiryWarning, type CredentialExpiry } from './credentials.js';
export { requestToken } from './token-endpoint.js';

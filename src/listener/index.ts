export { Listener, authGuardLimits, type MessageHandler, type Transaction } from './listener.js';
export { hashPassword, DeviceAuthenticator } from './passwords.js';
export { AuthGuard, type ActiveLockout, type AuthGuardLimits } from './auth-guard.js';
export { PromptSmtpServer, PromptConnection } from './prompt-server.js';

export { Listener, type MessageHandler, type Transaction } from './listener.js';
export { hashPassword, DeviceAuthenticator } from './passwords.js';

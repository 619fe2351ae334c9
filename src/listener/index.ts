export { Listener, type MessageHandler, type Transaction } from './listener.js';
export { hashPassword } from './passwords.js';

export { ControlServer, ControlSocketError } from './server.js';
export { askDaemon } from './client.js';
export type { ControlRequest, ControlReply } from './protocol.js';
export { daemonCommands } from './commands.js';

export { Spool, type StagedMessage } from './spool.js';

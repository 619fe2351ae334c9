export { Upstream, type Envelope, type SendReceipt } from './upstream.js';
export { parseReply } from './classify.js';

export { Upstream, type Envelope, type SendReceipt } from './upstream.js';
export { parseReply } from './classify.js';
export { explainReply, type ProviderVerdict } from './provider-replies.js';

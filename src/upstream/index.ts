export { Upstream, recipientReplies, type Envelope, type SendReceipt } from './upstream.js';
export { LiveSend } from './live-send.js';
export { Pacer } from './pacing.js';
export { parseReply } from './classify.js';
export { explainReply, type ProviderVerdict } from './provider-replies.js';
export { ApiClient, ApiRefusal } from './http-api.js';

export { Upstream, recipientReplies, type Envelope, type SendReceipt } from './upstream.js';
export { LiveSend } from './live-send.js';
export { parseReply } from './classify.js';
export { explainReply, type ProviderVerdict } from './provider-replies.js';
export { ApiClient, ApiRefusal } from './http-api.js';

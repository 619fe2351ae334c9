export { MESSAGE_STATUSES, type AttemptResult, type FinalStatus, type MessageStatus, type MessageTrace, type ReceivedEvent, type TraceEvent, type TraceSink } from './events.js';
export { FileTraceLog, NoTraceLog, type TraceLog } from './file-trace-log.js';
export { isStatus, parseSince, selectMessages, type TraceQuery } from './query.js';
export { ClusterLog, type ReplicaAnswers, type TraceSearchResult } from './search.js';
export { Activity, type ActivityView, type DeviceSeen, type HourCounts, type Tally } from './activity.js';
export { describeEvent, formatTimeline, timelineJson } from './format.js';

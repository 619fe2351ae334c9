export { createMetrics, METRIC_PREFIX, type Metrics } from './metrics.js';
export { StatusServer, type ReadinessReport } from './http.js';

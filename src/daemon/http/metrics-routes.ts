// GET /metrics (Prometheus text format, docs/metrics.md) and the hook that times every answered
// request by its route pattern. Under the daemon's auth like every route: the app-level onRequest
// hook runs before this one's handler.
import type { FastifyInstance } from 'fastify';
import type { DaemonMetrics, MetricsSource } from '../metrics.ts';

/** The route label of a request no route matched (a 404, or a URL the router refused). */
const UNMATCHED = 'unmatched';

export function registerMetricsRoutes(app: FastifyInstance, metrics: DaemonMetrics, source: MetricsSource): void {
  metrics.watch(source);
  app.addHook('onResponse', async (req, reply) => {
    metrics.observeRequest(req.method, req.routeOptions.url ?? UNMATCHED, reply.statusCode, reply.elapsedTime / 1000);
  });
  app.get('/metrics', async (_req, reply) => {
    const { body, contentType } = await metrics.text();
    return reply.header('content-type', contentType).header('cache-control', 'no-store').send(body);
  });
}

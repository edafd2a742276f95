// The HTTP server: parsing, error mapping and routing only. Handlers call the sandbox manager
// and never touch a VM directly.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { EmberdError } from '../../errors.ts';
import { silentLogger, type Logger } from '../../log.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import { registerSandboxRoutes } from './sandbox-routes.ts';
import { registerExecRoutes } from './exec-routes.ts';
import { registerFileRoutes } from './file-routes.ts';
import { registerSessionRoutes } from './session-routes.ts';
import { registerPackRoutes } from './pack-routes.ts';
import { registerPtyRoutes } from './pty-routes.ts';
import { registerPortRoutes } from './port-routes.ts';
import { registerPortProxy } from './port-proxy.ts';
import { rewritePortHost } from './port-host.ts';
import { requireLoopbackRequest } from './loopback-only.ts';
import type { DaemonInfo } from './info.ts';
import { RequestLog } from './request-log.ts';
import { requireToken } from '../auth.ts';
import { openApiDocument } from './openapi.ts';
import { allowedHostsFromEnv, registerMcpRoutes } from '../../mcp/http.ts';
import { registerMetricsRoutes } from './metrics-routes.ts';
import { DaemonMetrics } from '../metrics.ts';
import { isE2bRequest, registerE2bRoutes } from '../../e2b/routes.ts';

/** Request size limits: --max-body (JSON bodies), --max-upload (file uploads). */
export interface HttpLimits {
  maxBody: number;
  maxUpload: number;
}

export interface HttpOptions {
  /** The largest JSON body (--max-body); uploads are bounded by the manager's maxUploadBytes. */
  bodyLimit: number;
  info: () => DaemonInfo;
  log?: Logger;
  /** When set, every request must carry this bearer token (auth.ts). */
  auth?: { token: string; tokenFile: string };
  /** The daemon's metrics, which the manager also feeds (absent: the server's own, for tests). */
  metrics?: DaemonMetrics;
}

/** Longest path parameter routed; the URL itself is bounded by Node's 16 KiB header limit. */
const MAX_PARAM_LENGTH = 8192;

export function buildHttpServer(manager: SandboxManager, opts: HttpOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: (opts.log ?? silentLogger).child({ component: 'http' }) as FastifyBaseLogger,
    logController: new RequestLog(),
    bodyLimit: opts.bodyLimit,
    forceCloseConnections: true,
    return503OnClosing: true,
    // Ids are looked up, not pattern-checked: a long one is a sandbox that does not exist (404).
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // 8000-sb_x.localhost: a port by host name (port-host.ts)
    rewriteUrl: (req) => rewritePortHost(req),
    // Errors the router answers before any route or hook (a malformed %-escape, a path parameter
    // over MAX_PARAM_LENGTH): the same {error: {code, message}} as every other answer.
    frameworkErrors: (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
      const e = toEmberdError(err);
      void reply.status(e.status).send(e.toJSON());
    },
  });
  app.addHook('onRequest', async (req, reply) => { void reply.header('x-request-id', req.id); });
  if (opts.auth) app.addHook('onRequest', requireToken(opts.auth.token, opts.auth.tokenFile, isE2bRequest));
  else app.addHook('onRequest', requireLoopbackRequest(allowedHostsFromEnv())); // DNS rebinding, cross-site posts
  // Every route, as registered: the OpenAPI test compares this list with the document.
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (r) => { for (const m of [r.method].flat()) routes.push({ method: m, url: r.url }); });
  app.decorate('emberdRoutes', routes);

  // Bodies are JSON whatever Content-Type says (curl -d sends form-urlencoded); empty means none.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = (body as string).trim();
    if (text === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new EmberdError('INVALID_JSON', `the request body is not valid JSON (${(e as Error).message}); send a JSON object such as {"code": "print(6*7)"}`), undefined);
    }
  });

  app.setErrorHandler((err: FastifyError | EmberdError, req, reply) => {
    const e = toEmberdError(err);
    if (e.status >= 500 && e.status !== 503) req.log.error({ code: e.code, err }, e.message);
    if (e.retryAfterS !== undefined) void reply.header('retry-after', String(Math.max(1, Math.ceil(e.retryAfterS))));
    void reply.status(e.status).send(e.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new EmberdError('ROUTE_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}; the API is described in docs/api.md (POST /sandboxes, POST /sandboxes/{id}/exec, DELETE /sandboxes/{id}, ...)`);
    void reply.status(e.status).send(e.toJSON());
  });

  app.get('/', async () => opts.info());
  const openapi = openApiDocument();
  app.get('/openapi.json', async () => openapi);
  registerSandboxRoutes(app, manager);
  registerExecRoutes(app, manager);
  registerFileRoutes(app, manager);
  registerSessionRoutes(app, manager);
  registerPackRoutes(app, manager);
  registerPtyRoutes(app, manager);
  registerPortRoutes(app, manager, { authOn: opts.auth !== undefined });
  registerPortProxy(app, manager, { stripAuthorization: opts.auth !== undefined });
  registerMcpRoutes(app, { authToken: opts.auth?.token });
  registerMetricsRoutes(app, opts.metrics ?? new DaemonMetrics({ processMetrics: false }), manager);
  registerE2bRoutes(app, manager, { apiKey: opts.auth?.token });
  return app;
}

function toEmberdError(err: FastifyError | EmberdError): EmberdError {
  if (err instanceof EmberdError) return err;
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new EmberdError('BODY_TOO_LARGE', `the request body is larger than this daemon accepts; send less, or start emberd with a higher --max-body`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new EmberdError('UNSUPPORTED_MEDIA_TYPE', 'send the body as JSON');
    default:
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
        return new EmberdError('INVALID_REQUEST', err.message);
      }
      return new EmberdError('INTERNAL', `internal error: ${err.message}; this is a bug in emberd, please report it`);
  }
}

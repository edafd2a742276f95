// One log line per answered request, instead of Fastify's two ("incoming", "completed") that lack
// the route: its id (req_id, also sent back as X-Request-Id), method, route pattern, status,
// duration and, when the URL names one, the sandbox. Fastify's LogController is the documented
// hook for exactly this.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

export class RequestLog extends LogController {
  constructor() {
    super({ requestIdLogLabel: 'req_id' });
  }

  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    const sandbox = (req.params as { id?: string } | undefined)?.id;
    const line = {
      method: req.method,
      route: req.routeOptions.url ?? null,
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 10) / 10,
      ...(sandbox ? { sandbox } : {}),
    };
    if (error) reply.log.warn({ ...line, err: error }, 'request ended with an error');
    else reply.log.info(line, 'request');
  }

  // Routes that do not exist and 4xx errors are in the request line already.
  override routeNotFound(): void {}
}

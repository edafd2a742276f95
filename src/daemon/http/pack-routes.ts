// GET /packs: every language pack the daemon knows, usable or broken (docs/api.md, "Packs").
import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { PackList } from './responses.ts';

export function registerPackRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.get('/packs', async (): Promise<PackList> => ({ packs: manager.listPacks() }));
}

// The host-agent test backend against the shared backend conformance suite: the real guest agent
// as a host process, so that the manager's tests can trust it behaves as a backend must.
import { HostAgentBackend } from './host-agent-backend.ts';
import { runBackendConformance } from '../conformance.ts';

runBackendConformance('host-agent', () => new HostAgentBackend(), {
  skip: {
    'snapshot-restore': 'no VM: the agent is a host process, whose state cannot be saved and cloned',
    'live-save': 'no VM: the agent is a host process, whose state cannot be saved and cloned',
  },
});

// The QEMU backend against the shared backend conformance suite, on real VMs.
import { QemuBackend } from './qemu-backend.ts';
import { runBackendConformance } from '../conformance.ts';

runBackendConformance('qemu', () => new QemuBackend());

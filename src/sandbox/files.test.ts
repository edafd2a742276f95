// src/sandbox/files.ts is the index of the files module: importers (the file routes, the bench)
// depend on exactly these names. The parts are tested next to themselves in ./files/; the
// end-to-end behaviour on real VMs is in test/e2e-files.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as files from './files.ts';

test('files.ts re-exports the module\'s public API, nothing more', () => {
  assert.deepEqual(Object.keys(files).sort(), ['MAX_PATH_BYTES', 'SandboxFiles', 'fileError', 'normalizePath', 'parseListing']);
  assert.equal(files.MAX_PATH_BYTES, 4096);
  assert.equal(files.SandboxFiles.length, 2); // constructor(agent, options)
  for (const op of ['writeFile', 'writeTar', 'readFile', 'readTar', 'stat', 'list', 'delete'] as const) {
    assert.equal(typeof files.SandboxFiles.prototype[op], 'function', op);
  }
});

// Lets plain Node run the workspace's TypeScript sources with no build step: the simulator
// (`npm start` right after `npm ci`), the bench (always the working tree, never a stale
// dist/), and Jest's global setup/teardown (which run outside Jest's resolver and transform).
// `.ts` files are compiled by swc, the compiler Jest uses here, through pirates;
// `@usagekit/<pkg>` resolves to that package's src/index.ts (the `@usagekit/source` export
// condition, which plain Node does not apply); and the `.js` specifiers nodenext makes us
// write resolve to the `.ts` files beside them. Inline source maps keep stack traces and
// --cpu-prof output pointing at the .ts lines.
const Module = require('node:module');
const path = require('node:path');
const fs = require('node:fs');
const { addHook } = require('pirates');
const { transformSync } = require('@swc/core');

const workspaceRoot = path.resolve(__dirname, '../..');

function workspacePackageSource(request) {
  const match = /^@usagekit\/([a-z0-9-]+)$/.exec(request);
  if (!match) return undefined;
  for (const folder of ['packages', 'tools']) {
    const candidate = path.join(workspaceRoot, folder, match[1], 'src', 'index.ts');
    if (fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

exports.register = function register() {
  const originalResolve = Module._resolveFilename;
  Module._resolveFilename = function resolveWorkspaceSource(request, parent, ...rest) {
    const source = workspacePackageSource(request);
    if (source) return source;
    if (parent && parent.filename && parent.filename.endsWith('.ts') && /^\.\.?\//.test(request)) {
      const asTs = path.resolve(path.dirname(parent.filename), request.replace(/\.js$/, '.ts'));
      if (fs.existsSync(asTs)) return asTs;
    }
    return originalResolve.call(this, request, parent, ...rest);
  };
  const revertHook = addHook(
    (code, filename) =>
      transformSync(code, {
        filename,
        jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
        module: { type: 'commonjs' },
        sourceMaps: 'inline',
      }).code,
    { exts: ['.ts'], ignoreNodeModules: true },
  );
  return function restore() {
    revertHook();
    Module._resolveFilename = originalResolve;
  };
};

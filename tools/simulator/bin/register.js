// Lets plain Node run the simulator from its TypeScript sources, with no build step: `npm ci`
// then `npm start` works from a clean clone. `.ts` files are compiled by swc (already installed
// for Jest) through pirates; `@usagekit/<pkg>` resolves to that package's src/index.ts (the
// `@usagekit/source` export condition, which Node does not apply by default); and the `.js`
// specifiers nodenext makes us write resolve to the `.ts` files beside them. The replica and
// PostgreSQL-keeper processes load this file too, so every process runs the working tree.
// Same approach as tools/scripts/jest/register-ts.js, kept separate so the simulator does not
// depend on the Jest setup's internals.
const Module = require('node:module');
const path = require('node:path');
const fs = require('node:fs');
const { addHook } = require('pirates');
const { transformSync } = require('@swc/core');

const workspaceRoot = path.resolve(__dirname, '../../..');

function workspacePackageSource(request) {
  const match = /^@usagekit\/([a-z0-9-]+)$/.exec(request);
  if (!match) return undefined;
  for (const folder of ['packages', 'tools']) {
    const candidate = path.join(workspaceRoot, folder, match[1], 'src', 'index.ts');
    if (fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

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

addHook(
  (code, filename) =>
    transformSync(code, {
      filename,
      jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
      module: { type: 'commonjs' },
      sourceMaps: 'inline',
    }).code,
  { exts: ['.ts'], ignoreNodeModules: true },
);

process.env.TZ = 'UTC';

const nxPreset = require('@nx/jest/preset').default;

/**
 * Shared Jest settings. Jest runs CommonJS (the Prisma client is generated with
 * moduleFormat = "cjs" for that reason) and must resolve sibling packages to their
 * `src/` through the workspace condition, or it would pick up a stale `dist/`.
 */
module.exports = {
  ...nxPreset,
  testEnvironment: 'node',
  testEnvironmentOptions: {
    customExportConditions: ['@usagekit/source', 'node', 'require', 'default'],
  },
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      {
        jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
        module: { type: 'commonjs' },
        sourceMaps: 'inline',
      },
    ],
  },
  moduleFileExtensions: ['ts', 'js', 'json'],
  // nodenext makes us write `./x.js` for `./x.ts`; Jest resolves the file on disk.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  globalSetup: require.resolve('./tools/scripts/jest/global-setup.js'),
  globalTeardown: require.resolve('./tools/scripts/jest/global-teardown.js'),
  reporters: ['default', require.resolve('./tools/scripts/jest/summary-reporter.js')],
  testTimeout: 60_000,
};

/** @type {import('jest').Config} */
module.exports = {
  displayName: 'prisma-schema-engine',
  preset: '../../jest.preset.js',
  testMatch: ['<rootDir>/test/**/*.test.ts', '<rootDir>/src/**/*.test.ts'],
};

/** @type {import('jest').Config} */
module.exports = {
  displayName: 'telemetry',
  preset: '../../jest.preset.js',
  testMatch: ['<rootDir>/test/**/*.test.ts', '<rootDir>/src/**/*.test.ts'],
};

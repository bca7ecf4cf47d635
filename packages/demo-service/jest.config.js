/** @type {import('jest').Config} */
module.exports = {
  displayName: 'demo-service',
  preset: '../../jest.preset.js',
  testMatch: ['<rootDir>/test/**/*.test.ts', '<rootDir>/src/**/*.test.ts'],
};

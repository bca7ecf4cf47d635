import nx from '@nx/eslint-plugin';

export default [
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  ...nx.configs['flat/javascript'],
  {
    ignores: ['**/dist', '**/out-tsc', '**/node_modules', '**/generated/**', 'docs/**', '.nx/**'],
  },
  {
    files: ['**/*.ts', '**/*.js', '**/*.mjs', '**/*.cjs'],
    rules: {
      // Dependencies point one way: app → telemetry → boundary-usage → db. testing is for
      // tests and tools; tools may use everything and nothing imports them or an app.
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: true,
          allow: [],
          depConstraints: [
            { sourceTag: 'scope:db', onlyDependOnLibsWithTags: ['scope:db', 'scope:testing'] },
            {
              sourceTag: 'scope:boundary-usage',
              onlyDependOnLibsWithTags: ['scope:db', 'scope:testing'],
            },
            {
              sourceTag: 'scope:telemetry',
              onlyDependOnLibsWithTags: ['scope:boundary-usage', 'scope:db', 'scope:testing'],
            },
            { sourceTag: 'scope:testing', onlyDependOnLibsWithTags: ['scope:db', 'scope:testing'] },
            // An application (packages/demo-service, the reference a team copies): it uses
            // usagekit's public packages; tests may use the testing helpers.
            {
              sourceTag: 'scope:app',
              onlyDependOnLibsWithTags: [
                'scope:telemetry',
                'scope:boundary-usage',
                'scope:db',
                'scope:testing',
              ],
            },
            {
              sourceTag: 'scope:tools',
              onlyDependOnLibsWithTags: [
                'scope:db',
                'scope:boundary-usage',
                'scope:telemetry',
                'scope:testing',
              ],
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  {
    files: ['**/test/**/*.ts', '**/*.test.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
  {
    files: ['**/jest.config.js', 'jest.preset.js', '**/jest/*.js'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
];

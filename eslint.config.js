// Type-aware checks only: promises that are never awaited, or tested as if they were their value.
// (Store calls answer through promises; a forgotten await in a check would always pass.)
import tseslint from 'typescript-eslint'

export default tseslint.config({
  files: ['src/**/*.ts', 'src/**/*.tsx', 'packages/verifier/src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'demo/**/*.ts', 'examples/**/*.ts', 'docs/examples/**/*.ts'],
  languageOptions: { parser: tseslint.parser, parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
  plugins: { '@typescript-eslint': tseslint.plugin },
  linterOptions: { reportUnusedDisableDirectives: 'off' },
  rules: {
    // node:test's describe/it return promises the runner itself awaits.
    '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] }],
    '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
    '@typescript-eslint/await-thenable': 'error',
  },
})

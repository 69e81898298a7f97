// Lint rules: typescript-eslint's recommended set on every TypeScript file.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', '.tap/', 'node_modules/', 'media/', 'bench-results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // The web page's browser JavaScript: tsconfig.web.json type-checks it against the DOM
    // library, which catches undefined names better than a list of browser globals would.
    files: ['scripts/web/**/*.js'],
    rules: { 'no-undef': 'off' },
  },
);

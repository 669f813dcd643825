import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    // Build output, coverage data and benchmark results are generated, not written.
    ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**', 'bench/results/**']
  }),
  {
    rules: {
      // `void promise` is this project's mark for a promise left unawaited on purpose (a probe
      // loop, a close chained after a pending send); it is still refused as a value (`x = void 0`).
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
